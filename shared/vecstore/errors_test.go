package vecstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/milvus-io/milvus/pkg/v2/util/merr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestUnavailable: connection-level failures are told from the rest by
// type and gRPC code, through wrapping, never by their text.
func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("call: %w", context.Canceled), true},
		{io.EOF, true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{status.Error(codes.Unavailable, "connection error"), true},
		{fmt.Errorf("retry: %w", status.Error(codes.DeadlineExceeded, "deadline")), true},
		{status.Error(codes.InvalidArgument, "unavailable in the text is not enough"), false},
		{errors.New("collection not found: transport eof canceled"), false},
		// A server's rate limits and quotas: back off, as for an outage.
		{fmt.Errorf("insert: %w", merr.WrapErrServiceRateLimit(100, "dml")), true},
		{merr.WrapErrServiceQuotaExceeded("disk quota exceeded"), true},
		{status.Error(codes.ResourceExhausted, "too many requests"), true},
		{merr.WrapErrCollectionNotLoaded("c"), true}, // a restarted server reloading it
		{merr.WrapErrCollectionNotFound("c"), false},
		{merr.WrapErrIndexNotFound("c"), false},
	} {
		if got := unavailable(c.err); got != c.want {
			t.Errorf("unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	s := &Store{cfg: Config{Address: "m:19530"}}
	err := s.wrap("search", status.Error(codes.Unavailable, "down"))
	var grpcErr interface{ GRPCStatus() *status.Status }
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &grpcErr) || grpcErr.GRPCStatus().Code() != codes.Unavailable {
		t.Fatalf("wrap of Unavailable: %v, want ErrUnavailable with the gRPC status still in the chain", err)
	}
	if err := s.wrap("search", status.Error(codes.InvalidArgument, "bad")); errors.Is(err, ErrUnavailable) {
		t.Fatalf("wrap of InvalidArgument: %v, want not ErrUnavailable", err)
	}
}

// TestTypedErrors: a dropped collection is ErrNoCollection, told by its
// code: a worker ensures it again.
func TestTypedErrors(t *testing.T) {
	s := &Store{cfg: Config{Address: "m:19530"}}
	if err := s.wrap("upsert", merr.WrapErrCollectionNotFound("c")); !errors.Is(err, ErrNoCollection) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("wrap of collection not found: %v", err)
	}
}
