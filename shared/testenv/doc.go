// Package testenv starts the real servers that embedfleet talks to, for tests:
// NATS JetStream (in-process or as a separate nats-server process), MinIO and
// Milvus (the milvus-lite server), each on a free loopback port in a
// temporary directory, and stops them in t.Cleanup.
//
// Every helper waits until its server answers a health check and hands the
// test a ready client. Names handed out by [Name] are unique per test, so
// tests that share a server may run in parallel.
//
// The server binaries are installed by `make deps` (deploy/install/deps.sh)
// into ~/.cache/embedfleet. Their paths come from the environment
// (EMBEDFLEET_MINIO_BIN, EMBEDFLEET_NATS_BIN, EMBEDFLEET_MILVUS_BIN,
// EMBEDFLEET_ORT_LIB) or, when unset, from `deploy/install/deps.sh --env`,
// which owns the version pins. A missing binary fails the test with the make
// target that installs it; nothing is skipped silently.
//
//	func TestSomething(t *testing.T) {
//		m := testenv.StartMinIO(t)         // process, fresh bucket m.Bucket
//		js := testenv.StartNATS(t)         // in-process JetStream
//		mv := testenv.StartMilvus(t)       // milvus-lite process, mv.Client ready
//		coll := testenv.Name(t, "coll")    // unique collection name
//		...
//	}
package testenv
