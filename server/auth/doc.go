// Package auth holds the auth tokens a member hands out and checks, as
// etcd's --auth-token configures them: "simple" tokens (random, kept in
// memory, minted through the log so that every member knows them) or
// signed JWTs (which name the user and auth revision and are kept
// nowhere); and the Caller a token stands for. It knows nothing of raft,
// the engine or gRPC.
package auth
