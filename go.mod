module github.com/cairn-kv/cairn

go 1.26.0

require (
	github.com/anishathalye/porcupine v1.3.1
	golang.org/x/sys v0.49.0
)

require github.com/tidwall/btree v1.8.2

require golang.org/x/crypto v0.58.0
