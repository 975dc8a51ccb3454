package shares

import (
	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

// The messages of the shares protocol.

// Operations of a request.
const (
	opChallenge = "challenge"
	opOffer     = "offer"
	opSettle    = "settle"
	opResolve   = "resolve"
	// opVoid tells an acceptor that the holder ended the transfer
	// without it (it did not answer within EscrowWait).
	opVoid = "void"
	opAsk  = "ask"
	// The batch forms of challenge, offer and settle: Items carries one
	// request of the single form per blob, answered in order.
	opChallenges = "challenges"
	opOffers     = "offers"
	opSettles    = "settles"
)

// batchOf maps a batch operation to the single one it repeats.
var batchOf = map[string]string{opChallenges: opChallenge, opOffers: opOffer, opSettles: opSettle}

// MaxBatch bounds the blobs of one batch request.
const MaxBatch = 32

// request is one share operation, or a batch of them in Items.
type request struct {
	Op       string               `msgpack:"o"`
	ID       ownership.TransferID `msgpack:"i"`
	Ref      syncnode.BlobRef     `msgpack:"r"`
	Group    syncnode.GroupID     `msgpack:"g"`
	Accepted bool                 `msgpack:"a,omitempty"`
	// Proof is the requester's keyed hash of the whole blob, keyed by
	// the challenge's Nonce (ProofSize bytes).
	Proof []byte `msgpack:"p,omitempty"`
	// Leaving marks an ask from a member leaving the group.
	Leaving bool `msgpack:"lv,omitempty"`
	// Ejecting marks an offer asked by an admin about to eject the
	// holder: the holder offers every share it holds of the blob there.
	Ejecting bool `msgpack:"ej,omitempty"`
	// Want is, in an offer, the most shares the requester can accept in
	// the group (0: no bound given): the holder offers no more.
	Want int `msgpack:"wa,omitempty"`
	// Items are the requests of a batch operation.
	Items []request `msgpack:"b,omitempty"`
}

// response answers a request; Err says why it was refused.
type response struct {
	Err      string              `msgpack:"e,omitempty"`
	Transfer *ownership.Transfer `msgpack:"t,omitempty"`
	Keeps    bool                `msgpack:"k,omitempty"`
	Accepted bool                `msgpack:"a,omitempty"`
	// Taken answers an ask: how many shares the member took.
	Taken int `msgpack:"n,omitempty"`
	// Surplus answers an ask: the asked server holds the group's two
	// shares already (see Result.Surplus).
	Surplus bool `msgpack:"su,omitempty"`
	// Nonce answers a challenge: the key of the hash of the whole blob
	// that proves possession (ProofSize bytes).
	Nonce []byte `msgpack:"c,omitempty"`
	// Held answers a challenge: how many shares of the blob the holder
	// keeps in the group, held or in escrow (its word; at most two).
	Held int `msgpack:"h,omitempty"`
	// Nothing answers a challenge from a holder with no shares of the
	// blob in the group, none in escrow either: there is nothing to
	// prove possession for.
	Nothing bool `msgpack:"z,omitempty"`
	// Escrow answers an admin's ejecting offer that this node refuses
	// because shares of the blob in the group are in escrow still (their
	// acceptor did not answer): those transfers, for the admin to
	// resolve with their acceptors itself.
	Escrow []ownership.Transfer `msgpack:"es,omitempty"`
	// Items answer a batch operation's items, in order.
	Items []response `msgpack:"b,omitempty"`
}
