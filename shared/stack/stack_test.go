package stack_test

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

func TestMilvusLiteEnvCapsThreadsUnlessSet(t *testing.T) {
	got := stack.MilvusLiteEnv([]string{"PATH=/bin", "OMP_NUM_THREADS=8"}, "/opt/milvus/lib")
	want := []string{"PATH=/bin", "OMP_NUM_THREADS=8", "LD_LIBRARY_PATH=/opt/milvus/lib", "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("MilvusLiteEnv = %q, want %q", got, want)
	}
}

// TestStartAndClose stands the whole stack up (in-process NATS with the
// topology made, real milvus-lite), checks both answer, and takes it down:
// milvus-lite's process is gone afterwards.
func TestStartAndClose(t *testing.T) {
	bin := testenv.Binary(t, testenv.EnvMilvusBin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := stack.Start(stack.Config{DataDir: t.TempDir(), MilvusBin: bin})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Errorf("jetstream: %v", err)
	}
	nc.Close()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: st.MilvusAddr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListCollections(ctx, milvusclient.NewListCollectionOption()); err != nil {
		t.Errorf("milvus: %v", err)
	}
	c.Close(ctx)
	addr := st.Milvus.Addr
	st.Close()
	if !st.Milvus.Exited() {
		t.Fatal("milvus-lite still runs after Close")
	}
	if err := stack.DialCheck(addr); err == nil {
		t.Fatal("something still listens at milvus-lite's address after Close")
	}
	// A binary that is not there: a clear error, nothing left running.
	if _, err := stack.Start(stack.Config{DataDir: t.TempDir(), MilvusBin: "/nonexistent/milvus"}); err == nil ||
		!strings.Contains(err.Error(), "deps.sh milvus-lite") {
		t.Fatalf("a missing milvus-lite: %v", err)
	}
}

// TestWatchPeakRSS: a small child of a large parent reports its own peak,
// not the parent's (which getrusage's ru_maxrss would give).
func TestWatchPeakRSS(t *testing.T) {
	big := make([]byte, 300<<20)
	for i := range big {
		big[i] = byte(i)
	}
	cmd := exec.Command("sleep", "0.5")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	peak := stack.WatchPeakRSS(cmd.Process.Pid)
	_ = cmd.Wait()
	kib := peak()
	if kib <= 0 || kib > 50<<10 {
		t.Fatalf("sleep's peak RSS %d KiB (this process holds 300 MiB)", kib)
	}
	if ru := cmd.ProcessState.SysUsage().(*syscall.Rusage); ru.Maxrss < 200<<10 {
		t.Logf("ru_maxrss %d KiB: this kernel does not carry the parent's mark", ru.Maxrss)
	}
	runtime.KeepAlive(big)
}
