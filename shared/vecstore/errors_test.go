package vecstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

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
