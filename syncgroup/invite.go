package syncgroup

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// Errors of invitations.
var (
	// ErrInvitation reports an invitation that is forged, expired, not
	// from an admin, or presented by someone it does not name.
	ErrInvitation = errors.New("syncgroup: invitation refused")
)

// Invitation lets one peer join a syncgroup with one device type. An admin
// signs it with its libp2p key; it names the joiner and expires.
type Invitation struct {
	Group   syncnode.GroupID `msgpack:"g"`
	Joiner  peer.ID          `msgpack:"j"`
	DevType syncnode.DevType `msgpack:"t"`
	Expires int64            `msgpack:"e"` // Unix seconds
	Admin   peer.ID          `msgpack:"a"`
	// AdminKey is the admin's public key, for key types that a peer ID
	// does not embed; it must hash to Admin.
	AdminKey []byte `msgpack:"k,omitempty"`
	Sig      []byte `msgpack:"s"`
	// Nonce makes each invitation one of a kind: an admin admits a peer
	// once per invitation, and an ejection revokes that invitation.
	Nonce []byte `msgpack:"n,omitempty"`
}

// signed returns the bytes the signature covers: everything but Sig, under
// a context string so the signature means nothing elsewhere.
func (inv Invitation) signed() ([]byte, error) {
	c := inv
	c.Sig = nil
	b, err := msgpack.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte("syncnode invitation v1\x00"), b...), nil
}

// Invite returns an invitation for joiner to join group as dev until
// expires, signed with the admin's key.
func Invite(admin crypto.PrivKey, group syncnode.GroupID, joiner peer.ID, dev syncnode.DevType, expires time.Time) (Invitation, error) {
	id, err := peer.IDFromPrivateKey(admin)
	if err != nil {
		return Invitation{}, fmt.Errorf("syncgroup: invite: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(admin.GetPublic())
	if err != nil {
		return Invitation{}, fmt.Errorf("syncgroup: invite: %w", err)
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	inv := Invitation{Group: group, Joiner: joiner, DevType: dev, Expires: expires.Unix(), Admin: id, AdminKey: pub, Nonce: nonce}
	msg, err := inv.signed()
	if err != nil {
		return Invitation{}, err
	}
	if inv.Sig, err = admin.Sign(msg); err != nil {
		return Invitation{}, fmt.Errorf("syncgroup: invite: %w", err)
	}
	return inv, nil
}

// Verify checks that presenter may use the invitation at now: it names
// presenter, has not expired, and is signed by one of admins.
func (inv Invitation) Verify(presenter peer.ID, admins []peer.ID, now time.Time) error {
	switch {
	case inv.Joiner != presenter:
		return fmt.Errorf("%w: it names %s, not %s", ErrInvitation, inv.Joiner, presenter)
	case now.Unix() >= inv.Expires:
		return fmt.Errorf("%w: expired at %s", ErrInvitation, time.Unix(inv.Expires, 0).UTC().Format(time.RFC3339))
	case !slices.Contains(admins, inv.Admin):
		return fmt.Errorf("%w: %s is not an admin of %s", ErrInvitation, inv.Admin, inv.Group)
	case inv.DevType > syncnode.Leaf:
		return fmt.Errorf("%w: unknown device type %d", ErrInvitation, inv.DevType)
	}
	pub, err := inv.adminKey()
	if err != nil {
		return fmt.Errorf("%w: admin key: %v", ErrInvitation, err)
	}
	msg, err := inv.signed()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvitation, err)
	}
	if ok, err := pub.Verify(msg, inv.Sig); err != nil || !ok {
		return fmt.Errorf("%w: bad signature", ErrInvitation)
	}
	return nil
}

// adminKey returns the admin's public key: the one the peer ID embeds, or
// AdminKey if it hashes to the admin's ID.
func (inv Invitation) adminKey() (crypto.PubKey, error) {
	if pub, err := inv.Admin.ExtractPublicKey(); err == nil {
		return pub, nil
	}
	pub, err := crypto.UnmarshalPublicKey(inv.AdminKey)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil || id != inv.Admin {
		return nil, errors.New("key does not match the admin's peer ID")
	}
	return pub, nil
}

// Marshal encodes the invitation for sharing (as a file or a QR code).
func (inv Invitation) Marshal() ([]byte, error) { return msgpack.Marshal(inv) }

// UnmarshalInvitation decodes an invitation; it still has to be verified.
func UnmarshalInvitation(b []byte) (Invitation, error) {
	var inv Invitation
	if err := msgpackx.Unmarshal(b, &inv); err != nil {
		return Invitation{}, fmt.Errorf("%w: %v", ErrInvitation, err)
	}
	return inv, nil
}
