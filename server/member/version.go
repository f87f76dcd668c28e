package member

// Version is the etcd server version cairn reports (Status, /version):
// the API it speaks is etcd 3.5's.
const (
	Version        = "3.5.17"
	ClusterVersion = "3.5.0"
)
