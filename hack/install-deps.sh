#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks run, when missing
# (`make demo`, `make test` and `.ci/run` call it; a machine that has them skips apt entirely):
#   docker-registry: the real OCI registry of the artifact tests and the demo; apache2-utils: htpasswd;
#   curl, nginx-light, wrk, hyperfine: the demo, the loader tests and the benchmarks' reference tools;
#   musl-tools: the static builds of the container images' check;
#   runc, ca-certificates, util-linux (unshare): the test node's OCI runtime, the images' CA
#   bundle, the node's own mount namespace;
#   dkms, falcosecurity-scap-dkms, linux-headers-amd64, gcc, make, kmod: the driver loader's real
#   compile test (Debian's packaged Falco driver sources, built by dkms against the headers of
#   whichever kernel release the archive's linux-headers-amd64 names today; modinfo checks it).
set -euo pipefail
need=()
for pkg in curl docker-registry apache2-utils nginx-light wrk hyperfine musl-tools \
  dkms falcosecurity-scap-dkms linux-headers-amd64 gcc make kmod \
  runc ca-certificates util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ "${#need[@]}" -eq 0 ] && exit 0
echo "install-deps: installing ${need[*]}" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
