// Package bench holds cairn's side-by-side benchmarks. Each one runs the
// same workload against cairn and a comparator (bbolt, etcd's WAL) in one
// process, named Benchmark<Area>/<impl>/<workload>, so benchstat reads the
// ratio directly. It is a module of its own: the product never depends on
// the comparators.
//
//	make bench          # every benchmark, -count 6, into bench.txt
//	benchstat -col /impl bench.txt
package bench
