#!/usr/bin/env bash
# Builds the teleconsult Debian package from a compiled binary, with
# dpkg-deb from a staged tree: Debian's own tool, nothing to compile.
#
#   deploy/debian/build-deb.sh [--binary PATH] [--out DIR]
#                              [--compression xz|gzip|none]
#                              [--maintainer "Name <email>"]
#
# The binary defaults to target/release/teleconsult (build it first with
# `cargo build --release --locked -p teleconsult-signaling --bin teleconsult`).
# A debug build packages too, for tests, but it reads the web client from
# the source tree instead of embedding it: ship release builds only.
# Prints the path of the .deb on standard output.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=$repo/target/release/teleconsult
out=$repo/target/debian
compression=xz
maintainer=${DEB_MAINTAINER:-"Teleconsult maintainers <maintainers@teleconsult.invalid>"}

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compression) compression=$2; shift 2 ;;
    --maintainer) maintainer=$2; shift 2 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

[ -x "$binary" ] || { echo "build-deb.sh: no binary at $binary" >&2; exit 1; }
case "$binary" in
  */debug/*) echo "build-deb.sh: $binary is a debug build (web client read from the source tree): for tests only" >&2 ;;
esac

version=$("$binary" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/sbin" "$root/etc/teleconsult" \
  "$root/usr/lib/systemd/system" "$root/usr/lib/sysctl.d" \
  "$root/usr/share/doc/teleconsult/examples/nginx" "$root/usr/share/doc/teleconsult/examples/coturn"
strip --strip-unneeded -o "$root/usr/bin/teleconsult" "$binary"
chmod 0755 "$root/usr/bin/teleconsult"
install -m 0755 "$here/teleconsult-admin" "$root/usr/sbin/teleconsult-admin"
install -m 0644 "$here/teleconsult.toml" "$root/etc/teleconsult/teleconsult.toml"
install -m 0644 "$here/teleconsult.service" "$root/usr/lib/systemd/system/teleconsult.service"
install -m 0644 "$here/sysctl.conf" "$root/usr/lib/sysctl.d/teleconsult.conf"
install -m 0644 "$here/copyright" "$here/README.Debian" "$root/usr/share/doc/teleconsult/"
install -m 0644 "$repo/deploy/nginx/teleconsult-site.conf" "$repo/deploy/nginx/teleconsult-locations.conf" \
  "$root/usr/share/doc/teleconsult/examples/nginx/"
install -m 0644 "$repo/deploy/coturn/turnserver.conf" "$root/usr/share/doc/teleconsult/examples/coturn/"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
echo /etc/teleconsult/teleconsult.toml >"$root/DEBIAN/conffiles"

# The shared libraries the binary links (libc, libgcc), with the versions
# its symbols need, as Debian's packaging tools compute them.
mkdir "$stage/debian"
printf 'Source: teleconsult\n\nPackage: teleconsult\nArchitecture: any\n' >"$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O -e root/usr/bin/teleconsult 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@SHLIBS_DEPENDS@|$shlibs|" \
  "$here/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/teleconsult_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >/dev/null
echo "$deb"
