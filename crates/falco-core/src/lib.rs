//! Kube-free logic shared by the binaries of this workspace.
//!
//! Nothing here talks to Kubernetes, the network or a container runtime: everything is a
//! pure function of its inputs, so it is unit-tested without any server.

pub mod driver;
pub mod index;
pub mod oci;
