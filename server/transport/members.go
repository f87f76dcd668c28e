package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// streamMembers asks a member for its cluster's members, as a member
// about to join does before it knows its own id or the cluster's: the
// hello names neither, and the answer (status OK, the listener's cluster
// and member id) is followed by one frame, the listener's
// Handler.MemberList, and the connection closes.
const streamMembers streamKind = 5

// answerMembers writes the member list after the answer.
func (t *Transport) answerMembers(conn net.Conn) {
	if _, err := conn.Write(answer{status: statusOK, cluster: t.cfg.ClusterID, id: t.cfg.ID}.encode()); err != nil {
		return
	}
	w := bufio.NewWriter(conn)
	list := t.cfg.Handler.MemberList()
	frame := append(make([]byte, 4, 4+len(list)), list...)
	_ = writeFrame(w, frame)
}

// FetchMembers asks the member serving at peerURL for its cluster's
// members: it returns that cluster's id and the list as the member's
// Handler.MemberList gave it.
func FetchMembers(ctx context.Context, peerURL string, tlsCfg *tls.Config) (cluster uint64, list []byte, err error) {
	u, err := ParsePeerURL(peerURL)
	if err != nil {
		return 0, nil, err
	}
	conn, a, err := dialPeer(ctx, u, tlsCfg, nil, hello{kind: streamMembers})
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	if a.status != statusOK {
		return 0, nil, fmt.Errorf("transport: peer %s refused the member list (status %d)", u.Host, a.status)
	}
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	frame, err := readFrame(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("transport: reading the member list from %s: %w", u.Host, err)
	}
	if a.cluster == 0 {
		return 0, nil, errors.New("transport: the peer has no cluster id")
	}
	return a.cluster, frame, nil
}
