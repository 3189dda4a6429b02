#!/usr/bin/env bash
# Build SUNDIALS 6.4.1 with optimisation, as static position-independent libraries,
# from Debian's own source package (the one libsundials-dev 6.4.1+dfsg1-3 is built
# from), into PREFIX (lib/, include/).
#
#   scripts/build_sundials.sh PREFIX
#
# Run by `make setup` (into .venv/opt), and by meson itself when the option
# sundials_prefix is "auto", its default (into the build directory): so that
# `pip install` of an sdist links the optimised library too.
#
# Why: Debian's build passes -DCMAKE_C_FLAGS=-fcommon to CMake, which replaces the
# -O2 of dpkg-buildflags, so libsundials_cvodes.so and friends are compiled without
# optimisation. About 70% of a small stiff solve's time is spent inside CVODES, and
# the same source compiled with -O2 halves a Robertson solve (docs/performance.md).
#
# Only what the kernel links is built: CVODES, IDAS, ARKODE, the serial vector, the
# dense/sparse/band matrices and the dense, KLU and Krylov linear solvers (KLU from
# Debian's libsuitesparse-dev). The source tarball's SHA-256 is the one of Debian's
# .dsc; a mismatch stops the build. Nothing is installed outside PREFIX. A PREFIX that
# holds a finished build of the same tarball by the same script is left as it is.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), CMAKE (default
# cmake), JOBS (default: the number of cores).
set -euo pipefail

prefix=${1:?usage: scripts/build_sundials.sh PREFIX}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cmake=${CMAKE:-cmake}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

version=6.4.1
tarball=sundials_${version}+dfsg1.orig.tar.xz
sha256=c61157f1d4be06c704bea40cb131eb63ba2dada161989071604d0a0959cdf04a
url=$mirror/pool/main/s/sundials/$tarball

# a finished build of this tarball by this script is kept (meson re-runs the script each
# time it reconfigures); an edited script (other flags, say) builds again
stamp="$sha256 $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
done_mark=$prefix/.build-stamp
if [ "$(cat "$done_mark" 2>/dev/null)" = "$stamp" ]; then
  echo "build_sundials: SUNDIALS $version already built in $prefix"
  exit 0
fi

work=$prefix.work
rm -rf "$work" "$prefix"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT  # the logs' tails are printed on failure

echo "build_sundials: fetching $url"
if command -v curl >/dev/null 2>&1; then
  fetch=(curl -fsSL --retry 3 -o "$work/$tarball" "$url")
else
  fetch=(wget -q -O "$work/$tarball" "$url")
fi
"${fetch[@]}" || { echo "build_sundials: could not download $url" >&2; exit 1; }
echo "$sha256  $work/$tarball" | sha256sum -c --quiet - || {
  echo "build_sundials: $tarball does not have the SHA-256 of Debian's sundials_${version}+dfsg1-3.dsc" >&2
  exit 1
}
tar -xJf "$work/$tarball" -C "$work"

# -O2 without -DNDEBUG changes nothing in SUNDIALS' C (it has no assert());
# -fcommon as Debian has it. Static + PIC: linked into the Python extension.
"$cmake" -S "$work/sundials-$version" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS_RELEASE=-O2 \
  -DCMAKE_C_FLAGS=-fcommon \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
  -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_LIBDIR=lib \
  -DBUILD_SHARED_LIBS=OFF -DBUILD_STATIC_LIBS=ON \
  -DBUILD_ARKODE=ON -DBUILD_CVODES=ON -DBUILD_IDAS=ON \
  -DBUILD_CVODE=OFF -DBUILD_IDA=OFF -DBUILD_KINSOL=OFF \
  -DBUILD_FORTRAN_MODULE_INTERFACE=OFF \
  -DENABLE_MPI=OFF -DENABLE_OPENMP=OFF -DENABLE_PTHREAD=OFF -DENABLE_LAPACK=OFF \
  -DENABLE_KLU=ON \
  -DKLU_INCLUDE_DIR=/usr/include/suitesparse \
  -DKLU_LIBRARY_DIR="/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)" \
  -DEXAMPLES_ENABLE_C=OFF -DEXAMPLES_ENABLE_CXX=OFF -DEXAMPLES_INSTALL=OFF \
  > "$work/configure.log" 2>&1 || { tail -30 "$work/configure.log" >&2; exit 1; }
"$cmake" --build "$work/build" -j "$jobs" > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
"$cmake" --install "$work/build" > "$work/install.log" 2>&1 \
  || { tail -30 "$work/install.log" >&2; exit 1; }
echo "$stamp" > "$done_mark"
echo "build_sundials: SUNDIALS $version (-O2, static) in $prefix"
