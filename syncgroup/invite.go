package syncgroup

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
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
	// Addrs are where the joiner may reach the admin and the group's
	// servers: multiaddrs, each ending in the /p2p/ ID of its peer, at
	// most MaxInvitationAddrs of at most MaxInvitationAddrLen bytes. They
	// are hints: they only tell the joiner where to dial, and the peer it
	// reaches there must still prove its ID.
	Addrs []string `msgpack:"d,omitempty"`
	// AddrsSig is the admin's signature over Addrs and Sig (addrsSigned):
	// the addresses cannot be altered or added in transit. Sig does not
	// cover them, so that an invitation stripped of both (WithoutAddrs) is
	// still valid, and is what the admin is shown and the joiner's
	// membership row keeps: nodes that know no addresses in invitations
	// verify it as before.
	AddrsSig []byte `msgpack:"ds,omitempty"`
	// Genesis is the hash of the group's spec as created (Spec.Hash),
	// signed with the rest: the joiner refuses any other spec, whichever
	// peer answers its join. Empty in invitations of older nodes.
	Genesis []byte `msgpack:"gh,omitempty"`
}

// Bounds of an invitation's addresses: how many, and the bytes of each
// one's text form.
const (
	MaxInvitationAddrs   = 32
	MaxInvitationAddrLen = 512
)

// signed returns the bytes the signature covers: everything but Sig and
// the addresses, under a context string so the signature means nothing
// elsewhere.
func (inv Invitation) signed() ([]byte, error) {
	c := inv.WithoutAddrs()
	c.Sig = nil
	b, err := msgpack.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte("syncnode invitation v1\x00"), b...), nil
}

// addrsSigned returns the bytes AddrsSig covers: the addresses and the
// invitation's own signature, which binds them to this invitation alone.
func (inv Invitation) addrsSigned() ([]byte, error) {
	b, err := msgpack.Marshal([]any{inv.Sig, inv.Addrs})
	if err != nil {
		return nil, err
	}
	return append([]byte("syncnode invitation addresses v1\x00"), b...), nil
}

// WithoutAddrs returns the invitation without its addresses: what the
// joiner presents to the admin and keeps in its membership row.
func (inv Invitation) WithoutAddrs() Invitation {
	inv.Addrs, inv.AddrsSig = nil, nil
	return inv
}

// Invite returns an invitation for joiner to join group as dev until
// expires, signed with the admin's key, carrying addrs (see
// Invitation.Addrs), signed too.
func Invite(admin crypto.PrivKey, group syncnode.GroupID, joiner peer.ID, dev syncnode.DevType, expires time.Time, addrs ...string) (Invitation, error) {
	return invite(admin, group, nil, joiner, dev, expires, addrs)
}

// InviteTo is Invite for the group whose spec as created is genesis: the
// invitation carries its hash, so that the joiner takes no other.
func InviteTo(admin crypto.PrivKey, genesis Spec, joiner peer.ID, dev syncnode.DevType, expires time.Time, addrs ...string) (Invitation, error) {
	h, err := genesis.Hash()
	if err != nil {
		return Invitation{}, err
	}
	return invite(admin, genesis.ID, h, joiner, dev, expires, addrs)
}

func invite(admin crypto.PrivKey, group syncnode.GroupID, genesis []byte, joiner peer.ID, dev syncnode.DevType, expires time.Time, addrs []string) (Invitation, error) {
	if err := checkAddrs(addrs); err != nil {
		return Invitation{}, err
	}
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
	inv := Invitation{Group: group, Joiner: joiner, DevType: dev, Expires: expires.Unix(), Admin: id, AdminKey: pub, Nonce: nonce, Genesis: genesis}
	msg, err := inv.signed()
	if err != nil {
		return Invitation{}, err
	}
	if inv.Sig, err = admin.Sign(msg); err != nil {
		return Invitation{}, fmt.Errorf("syncgroup: invite: %w", err)
	}
	if len(addrs) == 0 {
		return inv, nil
	}
	inv.Addrs = slices.Clone(addrs)
	if msg, err = inv.addrsSigned(); err != nil {
		return Invitation{}, err
	}
	if inv.AddrsSig, err = admin.Sign(msg); err != nil {
		return Invitation{}, fmt.Errorf("syncgroup: invite: %w", err)
	}
	return inv, nil
}

// checkAddrs checks an invitation's addresses against the bounds: each a
// multiaddr that names its peer.
func checkAddrs(addrs []string) error {
	if len(addrs) > MaxInvitationAddrs {
		return fmt.Errorf("%w: %d addresses, at most %d", ErrInvitation, len(addrs), MaxInvitationAddrs)
	}
	for i, a := range addrs {
		if len(a) > MaxInvitationAddrLen {
			return fmt.Errorf("%w: address %d is %d bytes, at most %d", ErrInvitation, i, len(a), MaxInvitationAddrLen)
		}
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("%w: address %d, %q: %v", ErrInvitation, i, a, err)
		}
		if _, id := peer.SplitAddr(m); id == "" {
			return fmt.Errorf("%w: address %d, %q, names no peer (/p2p/ID)", ErrInvitation, i, a)
		}
	}
	return nil
}

// CheckAddrs checks the invitation's addresses: within the bounds, each a
// multiaddr ending in its peer's ID, and signed by the admin that signed
// the invitation. An invitation with none (from an older node, or
// stripped of them) passes.
func (inv Invitation) CheckAddrs() error {
	if err := checkAddrs(inv.Addrs); err != nil {
		return err
	}
	switch {
	case len(inv.Addrs) == 0 && len(inv.AddrsSig) == 0:
		return nil
	case len(inv.AddrsSig) == 0:
		return fmt.Errorf("%w: its addresses are not signed", ErrInvitation)
	case len(inv.Addrs) == 0:
		return fmt.Errorf("%w: a signature over no addresses", ErrInvitation)
	}
	pub, err := inv.adminKey()
	if err != nil {
		return fmt.Errorf("%w: admin key: %v", ErrInvitation, err)
	}
	msg, err := inv.addrsSigned()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvitation, err)
	}
	if ok, err := pub.Verify(msg, inv.AddrsSig); err != nil || !ok {
		return fmt.Errorf("%w: its addresses were altered: the admin's signature over them does not verify", ErrInvitation)
	}
	return nil
}

// AddrInfos returns the invitation's addresses by peer, once CheckAddrs
// passes: where the joiner may dial the admin and the group's servers.
func (inv Invitation) AddrInfos() ([]peer.AddrInfo, error) {
	if err := inv.CheckAddrs(); err != nil {
		return nil, err
	}
	ms := make([]ma.Multiaddr, 0, len(inv.Addrs))
	for _, a := range inv.Addrs {
		m, _ := ma.NewMultiaddr(a) // checked
		ms = append(ms, m)
	}
	return peer.AddrInfosFromP2pAddrs(ms...)
}

// Verify checks that presenter may use the invitation at now: it names
// presenter, has not expired, and is signed by one of admins.
func (inv Invitation) Verify(presenter peer.ID, admins []peer.ID, now time.Time) error {
	if !slices.Contains(admins, inv.Admin) {
		return fmt.Errorf("%w: %s is not an admin of %s", ErrInvitation, inv.Admin, inv.Group)
	}
	return inv.verifySig(presenter, now)
}

// verifySig is Verify but for the issuer's standing, which only the
// admitting admin judges: once admitted, a member stays one if its
// issuer stops being an admin.
func (inv Invitation) verifySig(presenter peer.ID, now time.Time) error {
	switch {
	case inv.Joiner != presenter:
		return fmt.Errorf("%w: it names %s, not %s", ErrInvitation, inv.Joiner, presenter)
	case now.Unix() >= inv.Expires:
		return fmt.Errorf("%w: expired at %s", ErrInvitation, time.Unix(inv.Expires, 0).UTC().Format(time.RFC3339))
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

// UnmarshalInvitation decodes an invitation and checks its addresses
// (CheckAddrs); the rest still has to be verified, by the admin.
func UnmarshalInvitation(b []byte) (Invitation, error) {
	var inv Invitation
	if err := msgpackx.Unmarshal(b, &inv); err != nil {
		return Invitation{}, fmt.Errorf("%w: %v", ErrInvitation, err)
	}
	if err := inv.CheckAddrs(); err != nil {
		return Invitation{}, err
	}
	return inv, nil
}
