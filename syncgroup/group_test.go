package syncgroup

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// sendMissing applies every row from knows that to does not, as a sync
// would, and returns the refusals and from's vector as it sent them.
func sendMissing(t *testing.T, from, to *Group, now time.Time) ([]error, VersionVector) {
	t.Helper()
	var errs []error
	remote := from.Rows().VV()
	for _, row := range missing(t, from.Rows(), to.Rows().VV(), []string{""}) {
		if _, err := to.Apply(row, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errs, remote
}

// deliver applies every row a knows that b does not, as a sync would.
func deliver(t *testing.T, from, to *Group, now time.Time) []error {
	t.Helper()
	errs, remote := sendMissing(t, from, to, now)
	if len(errs) == 0 {
		to.Rows().Learned(remote)
	}
	return errs
}

// g0 is the ID of the group "photos" created by adminKey.
func g0(t *testing.T, adminKey crypto.PrivKey) syncnode.GroupID {
	id, err := peer.IDFromPrivateKey(adminKey)
	if err != nil {
		t.Fatal(err)
	}
	return syncnode.GroupID(id.String() + "/photos")
}

func TestMembershipLifecycle(t *testing.T) {
	adminKey, admin := key(t)
	phoneKey, phone := key(t)
	serverKey, server := key(t)
	strangerKey, stranger := key(t)
	signed := func(k crypto.PrivKey, r Row) Row {
		t.Helper()
		if err := SignRow(k, g0(t, adminKey), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !g.IsMember(admin) {
		t.Fatal("creator is not a member")
	}
	// The phone joins with an invitation; the server's copy of the group
	// learns it through sync.
	inv, _ := Invite(adminKey, g.Spec().ID, phone, syncnode.Normal, t0.Add(time.Hour))
	if _, _, err := g.Admit(inv, t0); err != nil {
		t.Fatal(err)
	}
	pg, _ := NewGroup(g.Spec(), phone, time.Minute)
	pg.SetKey(phoneKey)
	if errs := deliver(t, g, pg, t0); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := pg.Join(inv, []string{"/ip4/127.0.0.1/tcp/1"}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	srvInv, _ := Invite(adminKey, g.Spec().ID, server, syncnode.Server, t0.Add(time.Hour))
	g.Admit(srvInv, t0)
	sg, _ := NewGroup(g.Spec(), server, time.Minute)
	sg.SetKey(serverKey)
	deliver(t, g, sg, t0)
	sg.Join(srvInv, nil, t0.Add(time.Second))
	for _, pair := range [][2]*Group{{pg, g}, {sg, g}, {g, pg}, {g, sg}} {
		if errs := deliver(t, pair[0], pair[1], t0.Add(2*time.Second)); len(errs) > 0 {
			t.Fatal(errs)
		}
	}
	if m, ok := pg.Member(server); !ok || m.DevType != syncnode.Server {
		t.Fatalf("phone sees server as %+v %v", m, ok)
	}
	if len(g.Members()) != 3 {
		t.Fatalf("admin sees %d members", len(g.Members()))
	}
	// The phone writes a row; a non-member's row is refused.
	v, _ := msgpack.Marshal("beach")
	row, err := pg.Put("photos/1", v, t0.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(row, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	forged := signed(strangerKey, Row{Key: "photos/2", Value: v, TS: Timestamp{Wall: t0.UnixNano()}, Writer: stranger, Seq: 1})
	if _, err := g.Apply(forged, t0.Add(3*time.Second)); !errors.Is(err, ErrNotMember) {
		t.Fatalf("non-member row: %v", err)
	}
	// A row "written by" another member, or altered after signing, is
	// refused whoever relays it.
	asAdmin := signed(phoneKey, Row{Key: "photos/4", Value: v, TS: Timestamp{Wall: t0.UnixNano()}, Writer: admin, Seq: 7})
	if _, err := sg.Apply(asAdmin, t0.Add(3*time.Second)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("row forged as the admin's: %v", err)
	}
	altered := row
	altered.Value, _ = msgpack.Marshal("not the beach")
	if _, err := sg.Apply(altered, t0.Add(3*time.Second)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("altered row: %v", err)
	}
	unsigned := row
	unsigned.Sig = nil
	if _, err := sg.Apply(unsigned, t0.Add(3*time.Second)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("unsigned row: %v", err)
	}
	if _, err := pg.Put("docs/1", v, t0); !errors.Is(err, ErrOutsideGroup) {
		t.Fatalf("write outside the prefixes: %v", err)
	}
	// A member may not claim to be a server by rewriting its membership.
	claim, _ := msgpack.Marshal(Member{DevType: syncnode.Server, Invitation: &inv})
	lie := signed(phoneKey, Row{Key: memberPrefix + string(phone), Value: claim, TS: Timestamp{Wall: t0.Add(4 * time.Second).UnixNano()}, Writer: phone, Seq: 99})
	if _, err := g.Apply(lie, t0.Add(4*time.Second)); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("self-promotion: %v", err)
	}
	// Nor remove someone else; an admin may.
	kick := signed(phoneKey, Row{Key: memberPrefix + string(server), Deleted: true, TS: Timestamp{Wall: t0.Add(5 * time.Second).UnixNano()}, Writer: phone, Seq: 100})
	if _, err := g.Apply(kick, t0.Add(5*time.Second)); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("member ejecting another: %v", err)
	}
	ej, err := g.Eject(phone, t0.Add(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sg.Apply(ej, t0.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	later, _ := msgpack.Marshal("after ejection")
	row2 := signed(phoneKey, Row{Key: "photos/3", Value: later, TS: Timestamp{Wall: t0.Add(7 * time.Second).UnixNano()}, Writer: phone, Seq: 3})
	if _, err := sg.Apply(row2, t0.Add(7*time.Second)); !errors.Is(err, ErrAfterExit) {
		t.Fatalf("ejected member's write: %v", err)
	}
	// Its row written while a member, which the admin had seen when it
	// ejected it, reaches the server only now: valid, as for everyone.
	if ok, err := sg.Apply(row, t0.Add(7*time.Second)); err != nil || !ok {
		t.Fatalf("a row the ejected member wrote while a member, arriving late: %v %v", ok, err)
	}
	if _, err := pg.Join(inv, nil, t0.Add(2*time.Hour)); !errors.Is(err, ErrInvitation) {
		t.Fatalf("rejoin with an expired invitation: %v", err)
	}
	// The ejected phone writes its membership again, newer than the
	// ejection: still no member. Its invitation is used up at the admin.
	again, _ := msgpack.Marshal(Member{DevType: syncnode.Normal, Invitation: &inv})
	back := signed(phoneKey, Row{Key: memberPrefix + string(phone), Value: again, TS: Timestamp{Wall: t0.Add(8 * time.Second).UnixNano()}, Writer: phone, Seq: 101})
	sg.Apply(back, t0.Add(8*time.Second))
	if sg.IsMember(phone) {
		t.Fatal("an ejected member rejoined by rewriting its membership")
	}
	if _, _, err := g.Admit(inv, t0.Add(9*time.Second)); !errors.Is(err, ErrEjected) {
		t.Fatalf("admitting the ejected phone again with its old invitation: %v", err)
	}
	// A new invitation from the admin, named in the ban, lets it back in;
	// another unused one it held does not.
	spare, _ := Invite(adminKey, g.Spec().ID, phone, syncnode.Normal, t0.Add(time.Hour))
	inv2, _ := Invite(adminKey, g.Spec().ID, phone, syncnode.Normal, t0.Add(time.Hour))
	readmit, ok, err := g.Readmit(phone, inv2.Nonce, t0.Add(10*time.Second))
	if err != nil || !ok {
		t.Fatalf("readmit: %v %v", ok, err)
	}
	if _, err := sg.Apply(readmit, t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Admit(spare, t0.Add(10*time.Second)); !errors.Is(err, ErrEjected) {
		t.Fatalf("admitting the ejected phone with an invitation the ban does not name: %v", err)
	}
	adm, fresh, err := g.Admit(inv2, t0.Add(10*time.Second))
	if err != nil || !fresh {
		t.Fatalf("re-invitation: %v", err)
	}
	if _, err := sg.Apply(adm, t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	rejoin, _ := pg.Join(inv2, nil, t0.Add(11*time.Second))
	sg.Apply(rejoin, t0.Add(11*time.Second))
	if !sg.IsMember(phone) {
		t.Fatal("a re-invited member is not a member")
	}
}

// A device's name travels in its membership row; whatever a member
// writes there, the others read at most MaxNameLen runes without control
// or formatting characters, and SetName writes only when the name changes.
func TestNamesTravelCleaned(t *testing.T) {
	adminKey, _ := key(t)
	phoneKey, phone := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, changed, err := g.SetName("  admin laptop ", t0); err != nil || !changed {
		t.Fatalf("SetName = %v, %v", changed, err)
	}
	if _, changed, _ := g.SetName("admin laptop", t0); changed {
		t.Fatal("SetName with the same name wrote a row")
	}
	inv, _ := Invite(adminKey, g.Spec().ID, phone, syncnode.Normal, t0.Add(time.Hour))
	if _, _, err := g.Admit(inv, t0); err != nil {
		t.Fatal(err)
	}
	pg, _ := NewGroup(g.Spec(), phone, time.Minute)
	pg.SetKey(phoneKey)
	if errs := deliver(t, g, pg, t0); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := pg.Join(inv, nil, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The phone writes a hostile name into its row directly, past SetName.
	m, _ := pg.memberRow(phone)
	m.Name = "\x1b[31mserver\u202e" + strings.Repeat("x", 200) + "\n"
	if _, err := pg.putMember(m, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if errs := deliver(t, pg, g, t0.Add(3*time.Second)); len(errs) > 0 {
		t.Fatal(errs)
	}
	got, ok := g.Member(phone)
	if !ok {
		t.Fatal("the phone is no member at the admin")
	}
	if want := "[31mserver" + strings.Repeat("x", MaxNameLen-len("[31mserver")); got.Name != want {
		t.Fatalf("the admin reads the phone's name as %q, want %q", got.Name, want)
	}
	if adm, _ := pg.Member(g.self); adm.Name != "admin laptop" {
		t.Fatalf("the phone reads the admin's name as %q", adm.Name)
	}
}

// A member's rows written before it left stay valid wherever they arrive
// after its tombstone; a row it signs after leaving is refused alike by
// every replica.
func TestRowsOfAMemberThatLeft(t *testing.T) {
	adminKey, _ := key(t)
	phoneKey, phone := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := Invite(adminKey, g.Spec().ID, phone, syncnode.Normal, t0.Add(time.Hour))
	if _, _, err := g.Admit(inv, t0); err != nil {
		t.Fatal(err)
	}
	pg, _ := NewGroup(g.Spec(), phone, time.Minute)
	pg.SetKey(phoneKey)
	deliver(t, g, pg, t0)
	joined, err := pg.Join(inv, nil, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(joined, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	v, _ := msgpack.Marshal("before leaving")
	before, err := pg.Put("photos/1", v, t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	lrows, err := pg.Leave(t0.Add(3 * time.Second))
	if err != nil || len(lrows) != 1 {
		t.Fatal(lrows, err)
	}
	left := lrows[0]
	// The admin hears of the leave first, of the row written before it
	// only then.
	if _, err := g.Apply(left, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if g.IsMember(phone) {
		t.Fatal("a member that left is still one")
	}
	if ok, err := g.Apply(before, t0.Add(4*time.Second)); err != nil || !ok {
		t.Fatalf("a row written before leaving, arriving after: %v %v", ok, err)
	}
	after := Row{Key: "photos/2", Value: v, TS: Timestamp{Wall: t0.Add(5 * time.Second).UnixNano()}, Writer: phone, Seq: left.Seq + 1}
	if err := SignRow(phoneKey, g.Spec().ID, &after); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(after, t0.Add(5*time.Second)); !errors.Is(err, ErrAfterExit) {
		t.Fatalf("a row signed after leaving: %v", err)
	}
}
