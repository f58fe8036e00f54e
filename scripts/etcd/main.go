// Command etcd is the etcd server of the pinned go.etcd.io/etcd/server/v3 release (see go.mod),
// built by scripts/install_tools.sh. It is etcd's own main (server/main.go) in a module of our own,
// because `go install go.etcd.io/etcd/server/v3@version` refuses that module's replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
