// Wrapper module: builds helm.sh/helm/v3/cmd/helm v3.22.0 (its go.mod has no replace lines to mirror).
module datasweep.local/build/helm

go 1.26.0

require helm.sh/helm/v3 v3.22.0
