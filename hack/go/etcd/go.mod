// Wrapper module: builds the etcd server binary (go.etcd.io/etcd/server/v3 is its main package) from the proxy.
// etcd's own replace lines point at sibling directories of its repository; here the published v3.6.16 modules
// are pinned instead.
module datasweep.local/build/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.16
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v3.6.16
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v3.6.16
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 v3.6.16
)
