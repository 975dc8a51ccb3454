package p2p

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode/internal/msgpackx"
)

// MaxFrame is the largest control message accepted (bulk blob bytes do not
// travel in frames).
const MaxFrame = 1 << 20

// Errors of the framing layer.
var (
	// ErrFrameTooLarge reports a frame whose announced length exceeds the
	// limit; the stream is then useless and is reset.
	ErrFrameTooLarge = errors.New("p2p: frame too large")
	// ErrBadMessage reports a frame that does not decode as the expected
	// message.
	ErrBadMessage = errors.New("p2p: malformed message")
)

type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// WriteMsg writes v as one frame (uvarint length, then msgpack), within
// timeout if w supports write deadlines.
func WriteMsg(w io.Writer, v any, timeout time.Duration) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("p2p: encode: %w", err)
	}
	return WriteFrame(w, b, timeout)
}

// WriteFrame writes b, an encoded message, as one frame within timeout.
func WriteFrame(w io.Writer, b []byte, timeout time.Duration) error {
	if len(b) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	if d, ok := w.(writeDeadliner); ok && timeout > 0 {
		d.SetWriteDeadline(time.Now().Add(timeout))
		defer d.SetWriteDeadline(time.Time{})
	}
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen32), uint64(len(b)))
	_, err := w.Write(append(buf, b...))
	return err
}

// ReadMsg reads one frame of at most max bytes into v, within timeout if the
// stream supports read deadlines (pass the stream as dl; r buffers it).
func ReadMsg(r *bufio.Reader, dl any, v any, max int, timeout time.Duration) error {
	if d, ok := dl.(readDeadliner); ok && timeout > 0 {
		d.SetReadDeadline(time.Now().Add(timeout))
		defer d.SetReadDeadline(time.Time{})
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return fmt.Errorf("p2p: read frame length: %w", err)
	}
	if n > uint64(max) {
		return fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, n, max)
	}
	// The buffer grows with the bytes that arrive, never to the announced
	// size up front: a peer that announces a large frame and sends little
	// costs little.
	var buf bytes.Buffer
	buf.Grow(int(min(n, 4<<10)))
	if k, err := buf.ReadFrom(io.LimitReader(r, int64(n))); err != nil || uint64(k) != n {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("p2p: read frame: %w", err)
	}
	if err := msgpackx.Unmarshal(buf.Bytes(), v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return nil
}
