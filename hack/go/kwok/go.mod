// Wrapper module: builds sigs.k8s.io/kwok/cmd/kwok v0.8.0 (its go.mod has no replace lines to mirror).
module datasweep.local/build/kwok

go 1.26.0

require sigs.k8s.io/kwok v0.8.0
