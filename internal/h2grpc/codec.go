package h2grpc

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// msgPrefix is the length of a gRPC message's prefix: a compressed flag
// and a big-endian length.
const msgPrefix = 5

// bufPool holds buffers for framed messages; the writer returns a buffer
// once its last byte is written.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBuf keeps big one-off buffers (a snapshot chunk, a large
// range) out of the pool.
const maxPooledBuf = 64 << 10

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// encodeMsg frames v as a gRPC message, compressed with comp when it is
// not nil, in a pooled buffer.
func encodeMsg(v any, comp encoding.Compressor) (*[]byte, error) {
	bp := bufPool.Get().(*[]byte)
	b := *bp
	pm := asProto(v)
	if pm == nil {
		putBuf(bp)
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %T is not a protocol buffer message", v)
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(append(b[:0], 0, 0, 0, 0, 0), pm)
	if err != nil {
		putBuf(bp)
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	b[0] = 0
	if comp != nil {
		var z bytes.Buffer
		z.Write([]byte{1, 0, 0, 0, 0})
		w, err := comp.Compress(&z)
		if err == nil {
			_, err = w.Write(b[msgPrefix:])
		}
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			putBuf(bp)
			return nil, status.Errorf(codes.Internal, "grpc: error while compressing: %v", err)
		}
		putBuf(bp)
		zb := z.Bytes()
		bp = &zb
		b = zb
	}
	if len(b)-msgPrefix > 1<<32-1 {
		putBuf(bp)
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: message too large (%d bytes)", len(b)-msgPrefix)
	}
	binary.BigEndian.PutUint32(b[1:msgPrefix], uint32(len(b)-msgPrefix))
	*bp = b
	return bp, nil
}

func asProto(v any) proto.Message {
	switch m := v.(type) {
	case proto.Message:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}

// decodeMsg unmarshals a message's payload into v, decompressing it
// first when its flag says so, as grpc-go's server does, with its errors.
func decodeMsg(flag byte, payload []byte, v any, compName string, max int) error {
	if flag&1 != 0 {
		if compName == "" || compName == "identity" {
			return status.Error(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
		}
		comp := encoding.GetCompressor(compName)
		if comp == nil {
			return status.Errorf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", compName)
		}
		r, err := comp.Decompress(bytes.NewReader(payload))
		if err != nil {
			return status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
		}
		out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
		if err != nil {
			return status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
		}
		if len(out) > max {
			return status.Errorf(codes.ResourceExhausted, "grpc: received message after decompression larger than max %d", max)
		}
		payload = out
	}
	pm := asProto(v)
	if pm == nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %T is not a protocol buffer message", v)
	}
	err := proto.Unmarshal(payload, pm)
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	return nil
}

// compressorFor is the compressor a response uses: the request's, when
// this process has it (grpc-go's server answers in the client's encoding).
func compressorFor(name string) encoding.Compressor {
	if name == "" || name == "identity" {
		return nil
	}
	return encoding.GetCompressor(name)
}

// encodeGrpcMessage percent-encodes a status message for the
// grpc-message trailer, as the gRPC spec asks.
func encodeGrpcMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	var sb strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// parseTimeout parses grpc-timeout: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, fmt.Errorf("bad timeout %q", s)
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad timeout %q", s)
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("bad timeout unit in %q", s)
	}
	if d := time.Duration(1<<63 - 1); n > int64(d/unit) {
		return d, nil
	}
	return time.Duration(n) * unit, nil
}

// decodeBinHeader decodes a "-bin" metadata value (base64, padded or not).
func decodeBinHeader(v string) (string, error) {
	if len(v)%4 == 0 {
		b, err := base64.StdEncoding.DecodeString(v)
		return string(b), err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	return string(b), err
}

// reservedHeader says whether a request header is the transport's rather
// than the caller's metadata (grpc-go keeps :authority and user-agent).
func reservedHeader(name string) bool {
	if name == "" || name[0] == ':' {
		return name != ":authority"
	}
	switch name {
	case "content-type", "grpc-message-type", "grpc-encoding", "grpc-message", "grpc-status",
		"grpc-timeout", "grpc-status-details-bin", "te", "grpc-accept-encoding", "connection":
		return true
	}
	return false
}
