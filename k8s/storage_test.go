package k8s

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"google.golang.org/grpc/grpclog"
	"k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/utils/clock"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
}

// The cairn binary, built once per run.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func cairnBinary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("K8S_STORAGE_BINARY"); b != "" {
		// Another etcd-compatible binary (etcd 3.5, to compare), started
		// with the same flags.
		return b
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "cairn-k8s-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, "cairn"), "./cmd/cairn")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building cairn: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "cairn")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// freePort is a port on 127.0.0.1 free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runCairn starts a cairn member of its own for the test (as Kubernetes'
// tests start an etcd each) and returns a Kubernetes client of it; the
// member is stopped, and must exit 0, when the test ends.
func runCairn(t testing.TB, flags ...string) *kubernetes.Client {
	t.Helper()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(cairnBinary(t), "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer,
		"--log-level", "warn")
	cmd.Args = append(cmd.Args, flags...)
	logPath := filepath.Join(t.TempDir(), "cairn.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c, err := kubernetes.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("cairn did not stop within 20 s")
		}
		// (etcd dies by the signal it handled; cairn exits 0.)
		if st, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); cmd.ProcessState.ExitCode() != 0 && !(os.Getenv("K8S_STORAGE_BINARY") != "" && st.Signaled()) {
			t.Errorf("cairn exited %d", cmd.ProcessState.ExitCode())
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("cairn's log:\n%s", data)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, err := c.KV.Get(ctx, "health"); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cairn does not answer: %v", ctx.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The calls recorded from here on, as Kubernetes' own test server
	// records them.
	lists := storagetesting.NewKubernetesRecorder(c.Kubernetes)
	c.KV = storagetesting.NewKVRecorder(c.KV, lists)
	c.Kubernetes = lists
	return c
}

// swappable is a transformer whose inner one a test may replace (the
// tests that corrupt stored data replace the prefix transformer).
type swappable struct {
	mu    sync.Mutex
	inner value.Transformer
}

func (s *swappable) get() value.Transformer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inner
}

func (s *swappable) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swappable) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// cairnStore is the API server's etcd3 store on cairn, with the prefix
// transformer the tests may change.
type cairnStore struct {
	storage.Interface
	transformer *swappable
	original    *storagetesting.PrefixTransformer
}

func (s *cairnStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	t := *s.original
	s.transformer.mu.Lock()
	s.transformer.inner = modifier(&t)
	s.transformer.mu.Unlock()
	return func() {
		s.transformer.mu.Lock()
		s.transformer.inner = s.original
		s.transformer.mu.Unlock()
	}
}

// testPrefix is what the test transformer puts before every value.
const testPrefix = "test!"

// setup is Kubernetes' store over a cairn member of the test's own
// (started with flags).
func setup(t *testing.T, flags ...string) (context.Context, *cairnStore, *kubernetes.Client) {
	t.Helper()
	client := runCairn(t, flags...)
	codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	original := storagetesting.NewPrefixTransformer([]byte(testPrefix), false)
	tr := &swappable{inner: original}
	leases := etcd3.NewDefaultLeaseManagerConfig()
	leases.ReuseDurationSeconds = 1
	s, err := etcd3.New(client, compactor, codec, func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} },
		"", "/pods/", schema.GroupResource{Resource: "pods"}, tr, leases, etcd3.NewDefaultDecoder(codec, versioner), versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return context.Background(), &cairnStore{Interface: s, transformer: tr, original: original}, client
}

// compaction compacts the store up to a resource version, as Kubernetes'
// compactor does, and waits until the store has seen it.
func compaction(s *cairnStore, client *clientv3.Client) storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var current int64
		current, _, _, err = etcd3.Compact(ctx, client, current, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, client, current, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		for s.CompactRevision() != int64(rv) {
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// increaseRV moves the revision on by a write elsewhere.
func increaseRV(client *clientv3.Client) storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("increasing the resource version: %v", err)
		}
		return resp.Header.Revision
	}
}

// callsValid checks the reads a paginated list made, as Kubernetes' own
// tests count them: the objects the transformer read, and the calls to
// the store (pages grow by doubling up to maxLimit).
func callsValid(s *cairnStore, client *kubernetes.Client) storagetesting.CallsValidation {
	kv := client.KV.(*storagetesting.KVRecorder)
	return func(t *testing.T, pageSize, objects uint64) {
		if reads := s.original.GetReadsAndReset(); reads != objects {
			t.Errorf("objects read: %d, want %d", reads, objects)
		}
		want := uint64(1)
		if pageSize != 0 {
			limit := pageSize
			for sum := uint64(1); sum < objects; {
				limit = min(2*limit, maxLimit)
				sum += limit
				want++
			}
		}
		if reads := kv.GetReadsAndReset() + kv.GetStreamReadsAndReset(); reads != want {
			t.Fatalf("store calls: %d, want %d", reads, want)
		}
	}
}

// maxLimit is the etcd3 store's largest page.
const maxLimit = 10000

// keyValid checks a stored object as Kubernetes' own tests do: under the
// transformer's prefix, decodable, with no resource version or self link.
func keyValid(client *clientv3.Client) storagetesting.KeyValidation {
	codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
	return func(ctx context.Context, t *testing.T, key string) {
		resp, err := client.KV.Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("get %s: %v (%d kvs)", key, err, len(resp.Kvs))
		}
		obj, err := runtime.Decode(codec, resp.Kvs[0].Value[len(testPrefix):])
		if err != nil {
			t.Fatalf("decoding %s: %v", key, err)
		}
		pod := obj.(*example.Pod)
		if pod.ResourceVersion != "" || pod.SelfLink != "" {
			t.Errorf("stored object has a resource version %q or self link %q", pod.ResourceVersion, pod.SelfLink)
		}
	}
}

func TestCreate(t *testing.T) {
	ctx, s, c := setup(t)
	storagetesting.RunTestCreate(ctx, t, s, keyValid(c.Client))
}

func TestCreateWithTTL(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestCreateWithTTL(ctx, t, s)
}

func TestCreateWithKeyExist(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestCreateWithKeyExist(ctx, t, s)
}

func TestGet(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestGet(ctx, t, s)
}

func TestUnconditionalDelete(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestUnconditionalDelete(ctx, t, s)
}

func TestConditionalDelete(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestConditionalDelete(ctx, t, s)
}

func TestGuaranteedUpdate(t *testing.T) {
	ctx, s, c := setup(t)
	storagetesting.RunTestGuaranteedUpdate(ctx, t, s, keyValid(c.Client))
}

func TestListPaging(t *testing.T) {
	ctx, s, _ := setup(t)
	storagetesting.RunTestListPaging(ctx, t, s)
}
