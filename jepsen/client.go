package jepsen

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// opTimeout bounds one operation: past it the outcome of a write is
// unknown.
const opTimeout = 2 * time.Second

// definite says whether a write that failed with err certainly did not
// happen: it never left the client (no connection to the member), or
// the member refused it before proposing it. Anything else, a timeout
// above all, leaves the outcome unknown.
func definite(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	msg := strings.ToLower(st.Message())
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.PermissionDenied, codes.ResourceExhausted:
		return true
	case codes.Unavailable:
		// gRPC could not connect: the request was not sent.
		return strings.Contains(msg, "connection refused") || strings.Contains(msg, "no connection available") ||
			strings.Contains(msg, "there is no address available") || strings.Contains(msg, "error while dialing")
	}
	return false
}

// completeWrite completes a write that failed with err: failed if it
// certainly did not happen, else unknown.
func completeWrite(p *Pending, err error) {
	if definite(err) {
		p.Fail(err)
	} else {
		p.Unknown(err)
	}
}

// backoff waits a little after a failed operation, so that a client of a
// member that is down does not pile up failures (unknown writes above
// all, which make the linearizability search harder).
func backoff(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}
