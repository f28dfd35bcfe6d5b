// Package stack runs embedfleet's servers inside one machine: NATS
// JetStream in this process, milvus-lite as a child process, and the
// process machinery under them (free ports, readiness, logs, stopping).
// `embedfleet dev` and `embedfleet bench` stand their whole system up with
// [Start]; shared/testenv starts the same servers for the tests with
// [StartNATS], [StartMilvusLite] and [StartProcess].
//
//	st, err := stack.Start(stack.Config{DataDir: dir, MilvusBin: bin})
//	defer st.Close()
//	// NATS JetStream at st.NATSURL, Milvus at st.MilvusAddr
//
// It imports no embedfleet package, so that any package's tests may start
// servers through shared/testenv.
package stack
