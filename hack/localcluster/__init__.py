"""A real, local Kubernetes control plane for tests and the demo (no kubelet, no containers).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are built from their Go modules
(`hack/build-cluster-bins.sh`); KWOK simulates nodes and the application's pods; the job-pod
executor (`localcluster.executor`) stands in for a kubelet and a container runtime for the
operator's phase Jobs, running their command as a local process. `localcluster.postgres` starts a
throwaway PostgreSQL. Nothing here ships in the product.

Entry points: `python -m localcluster up|down|status` (with `hack/` on PYTHONPATH), and for tests
`localcluster.cluster.is_up()`, `ensure_up()` (a `Cluster` handle: kubeconfig, bin_dir, state_dir,
logs_dir) and `down()`. How it is built, what it guarantees and what it does not emulate:
docs/local-cluster.md.
"""
