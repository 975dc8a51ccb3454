package api

import (
	"reflect"
	"testing"
)

// Every field of every type the API sends or receives has a JSON name:
// the wire form is the contract, not Go's field names.
func TestEveryFieldHasAJSONName(t *testing.T) {
	for _, v := range []any{Error{}, BlobInfo{}, FetchEvent{}, Removed{}, Why{}, WhyLocation{}, WhyUnreferenced{}, WhyCopies{}, CreateRequest{},
		Group{}, InviteRequest{}, Invitation{}, GroupRequest{}, Left{}, Member{}, RowRequest{}, Row{}, Deleted{},
		Peer{}, Status{}, Durability{}, PageState{}, PageGroup{}, QueueEntry{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Anonymous {
				continue // embedded: its fields are named in its own type
			}
			if tag := f.Tag.Get("json"); tag == "" || tag[0] == ',' {
				t.Errorf("%s.%s has no JSON name", typ.Name(), f.Name)
			}
		}
	}
}
