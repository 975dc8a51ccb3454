package value_test

import (
	"fmt"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
)

// An app stores a struct with a blob ref in a row and reads it back; the
// same bytes show as JSON, and the node finds the ref inside them.
func Example() {
	type Photo struct {
		Title string           `json:"title"`
		Image syncnode.BlobRef `json:"image"`
		Tags  []string         `json:"tags,omitempty"`
	}
	// A ref as node.Node.PutBlob returns it in blobstore.Info.
	img, _ := syncnode.ParseBlobRef("bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y")

	b, err := value.Marshal(Photo{Title: "beach", Image: img, Tags: []string{"sea"}})
	if err != nil {
		panic(err)
	}
	// b is what node.Node.PutRow takes; GetRow gives it back.

	var back Photo
	if err := value.Unmarshal(b, &back); err != nil {
		panic(err)
	}
	fmt.Println(back.Title, back.Image == img)

	refs, _ := value.Refs(b)
	fmt.Println(refs)

	j, _ := value.ToJSON(b)
	fmt.Println(string(j))
	// Output:
	// beach true
	// [bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y]
	// {"image":{"$blob":"bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y"},"tags":["sea"],"title":"beach"}
}

// FromJSON takes JSON an app already has, {"$blob": REF} marking refs.
func ExampleFromJSON() {
	b, err := value.FromJSON([]byte(`{"title": "beach", "image": {"$blob": "bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y"}}`))
	if err != nil {
		panic(err)
	}
	refs, _ := value.Refs(b)
	fmt.Println(len(b), "bytes,", len(refs), "ref")

	_, err = value.FromJSON([]byte(`{"title": "beach",}`))
	fmt.Println(err)
	// Output:
	// 54 bytes, 1 ref
	// value: malformed: JSON at byte 18 (line 1, column 19): invalid character '}' looking for beginning of object key string
}

// Bytes that are JSON, not msgpack, are refused with a hint.
func ExampleCheck() {
	fmt.Println(value.Check([]byte(`{"title": "beach"}`)))
	// Output:
	// value: malformed: msgpack: 17 trailing bytes from byte 1; value looks like JSON; convert it with value.FromJSON
}
