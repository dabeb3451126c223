#!/usr/bin/env bash
# The install a user gets, tested: packs deccom and this machine's platform package
# (@deccom/native-linux-x64-gnu on the CI machine), checks all eight manifests and the tarball's
# contents, runs arethetypeswrong and publint on the tarball, installs both tarballs into a new
# project with no cargo or rustc reachable, and there:
#   - checks that no target/ or .node file landed in node_modules/deccom (the addon comes from
#     the platform package),
#   - runs an ES module and a CommonJS smoke script (import and require; two nodes exchange a
#     message over Noise + ReliableUdp) on this machine's Node and on Node $SMOKE_NODE,
#   - type-checks TypeScript files using the API under --strict with node16, nodenext and
#     bundler resolution;
# then makes the release's prebuilds bundle (scripts/prebuilds.mjs, with this machine's binary),
# installs that tarball with --omit=optional (no platform package, no cargo) and checks that the
# install script and the loader take prebuilds/<platform>-<arch>/ and two nodes exchange a message.
# Needs the native addon built (native/deccom.<platform>.node) and dist/ compiled: `npm install`.
# Environment: SMOKE_NODE (default 24.22.3): the extra Node line; KEEP=1 keeps the temp project.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
smoke_node_version="${SMOKE_NODE:-24.22.3}"

suffix="$(node -p '
  const { platform, arch } = process
  platform === "linux" ? `linux-${arch}-${process.report.getReport().header.glibcVersionRuntime ? "gnu" : "musl"}`
    : platform === "win32" ? `win32-${arch}-msvc` : `${platform}-${arch}`')"
binary="native/deccom.$suffix.node"
[ -f "$binary" ] || { echo "check-package: $binary is missing; build it first (npm install or npm run build:native)" >&2; exit 1; }
[ -d "npm/$suffix" ] || { echo "check-package: no platform package npm/$suffix for this machine" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/deccom-package.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$tmp"' EXIT; else echo "check-package: keeping $tmp"; fi

echo "-- manifests (napi prepublish and provenance-publish prerequisites, all eight packages)"
node scripts/check-package.mjs manifests

echo "-- pack deccom"
mkdir -p "$tmp/packs"
npm pack --json --pack-destination "$tmp/packs" >"$tmp/pack-main.json"
node scripts/check-package.mjs contents "$tmp/pack-main.json"
main_tgz="$tmp/packs/$(node -p 'require(process.argv[1])[0].filename' "$tmp/pack-main.json")"

echo "-- pack @deccom/native-$suffix (with this machine's release build of the addon)"
cp -R "npm/$suffix" "$tmp/platform"
cp "$binary" "$tmp/platform/"
(cd "$tmp/platform" && npm pack --json --pack-destination "$tmp/packs" >"$tmp/pack-platform.json")
node -e '
  const [p] = require(process.argv[1]); const want = require(process.argv[2]).main
  const files = p.files.map((f) => f.path).sort()
  const extra = files.filter((f) => ![want, "package.json", "README.md", "LICENSE"].includes(f))
  if (!files.includes(want) || !files.includes("package.json") || extra.length) {
    console.error(`check-package: platform tarball holds ${files}`); process.exit(1)
  }
  console.log(`check-package: ${p.name}@${p.version}: ${files.join(", ")}, ${(p.size / 1048576).toFixed(1)} MB packed`)' \
  "$tmp/pack-platform.json" "$tmp/platform/package.json"
platform_tgz="$tmp/packs/$(node -p 'require(process.argv[1])[0].filename' "$tmp/pack-platform.json")"

echo "-- arethetypeswrong and publint on the tarball"
tool() { if [ -x "$root/node_modules/.bin/$1" ]; then echo "$root/node_modules/.bin/$1"; else command -v "$1" || { echo "check-package: $1 not found; run npm install" >&2; exit 1; }; fi; }
attw="$(tool attw)"; publint="$(tool publint)"
"$attw" "$main_tgz"
# publint reads the package from a directory: the unpacked tarball (exactly what npm ships).
mkdir -p "$tmp/unpacked" && tar -xzf "$main_tgz" -C "$tmp/unpacked"
"$publint" run --strict "$tmp/unpacked/package"

echo "-- install both tarballs into a new project, with no cargo or rustc on PATH"
mkdir -p "$tmp/project/bin"
ln -s "$(command -v node)" "$tmp/project/bin/node"
ln -s "$(command -v npm)" "$tmp/project/bin/npm"
nocargo="$tmp/project/bin"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  { [ -e "$d/cargo" ] || [ -e "$d/rustc" ] || [ -e "$d/rustup" ]; } || nocargo="$nocargo:$d"
done
cd "$tmp/project"
printf '{ "name": "deccom-smoke", "version": "1.0.0", "private": true }\n' >package.json
cp "$root"/scripts/check-package/* .
(
  export PATH="$nocargo"
  unset CARGO CARGO_HOME RUSTUP_HOME
  if command -v cargo >/dev/null || command -v rustc >/dev/null; then echo "check-package: cargo/rustc still reachable" >&2; exit 1; fi
  # --prefer-offline: deccom's own dependencies come from the npm cache the repository's install filled.
  npm install --prefer-offline --no-audit --no-fund --foreground-scripts "$main_tgz" "$platform_tgz"
)
installed="node_modules/deccom"
[ -f "$installed/package.json" ] || { echo "check-package: deccom is not installed" >&2; exit 1; }
[ ! -e "$installed/target" ] || { echo "check-package: $installed/target exists" >&2; exit 1; }
if find "$installed" -name '*.node' | grep -q .; then echo "check-package: a .node file inside $installed: the addon must come from the platform package" >&2; exit 1; fi
[ -f "node_modules/@deccom/native-$suffix/deccom.$suffix.node" ] || { echo "check-package: platform package not installed" >&2; exit 1; }

echo "-- smoke: ESM and CommonJS, on Node $(node --version) and Node $smoke_node_version"
smoke_node="$(bash "$root/scripts/node-bin.sh" "$smoke_node_version")"
for n in node "$smoke_node"; do
  PATH="$nocargo" "$n" smoke.mjs
  PATH="$nocargo" "$n" smoke.cjs
done

echo "-- TypeScript: the declarations under --strict with node16, nodenext and bundler resolution"
tsc="$root/node_modules/typescript/bin/tsc"
common=(--noEmit --strict --skipLibCheck false --types node --typeRoots "$root/node_modules/@types" --target es2022)
node "$tsc" "${common[@]}" --module node16 --moduleResolution node16 types.mts types.cts
node "$tsc" "${common[@]}" --module nodenext --moduleResolution nodenext types.mts types.cts
cp types.mts types.ts
node "$tsc" "${common[@]}" --module esnext --moduleResolution bundler types.ts

echo "-- prebuilds bundle: the release tarball with prebuilds/ (scripts/prebuilds.mjs), installed with --omit=optional"
# As the release job makes it: the tarball's files plus prebuilds/<platform>-<arch>/ (here only this
# machine's binary) and the optionalDependencies napi prepublish writes, packed again.
mkdir -p "$tmp/bundle" && tar -xzf "$main_tgz" -C "$tmp/bundle"
bundle_dir="$tmp/bundle/package"
prebuilt="$(node "$root/scripts/prebuilds.mjs" --from "$root/native" --only "$suffix" --out "$bundle_dir/prebuilds" | tee -a /dev/stderr | sed -n 's#^  .*/\(prebuilds/[^ ]*\.node\) .*#\1#p')"
[ -n "$prebuilt" ] && [ -f "$bundle_dir/$prebuilt" ] || { echo "check-package: prebuilds.mjs wrote no binary" >&2; exit 1; }
node -e '
  const fs = require("fs"); const file = process.argv[1]; const p = JSON.parse(fs.readFileSync(file, "utf8"))
  const targets = require(process.argv[2]).napi.targets
  p.optionalDependencies = Object.fromEntries(targets.map((t) => {
    const [cpu, , sys, abi] = t.split("-")
    const os = { linux: "linux", darwin: "darwin", windows: "win32" }[sys]; const arch = { x86_64: "x64", aarch64: "arm64" }[cpu]
    return [`${p.napi.packageName}-${os}-${arch}${abi ? `-${abi}` : ""}`, p.version]
  }))
  fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n")' "$bundle_dir/package.json" "$root/package.json"
(cd "$bundle_dir" && npm pack --ignore-scripts --json --pack-destination "$tmp/packs" >"$tmp/pack-bundle.json")
node "$root/scripts/check-package.mjs" bundle-contents "$tmp/pack-bundle.json" "$prebuilt"
bundle_tgz="$tmp/packs/$(node -p 'require(process.argv[1])[0].filename' "$tmp/pack-bundle.json")"
mkdir -p "$tmp/omit"
cp "$root"/scripts/check-package/smoke.* "$tmp/omit/"
cd "$tmp/omit"
printf '{ "name": "deccom-omit-optional", "version": "1.0.0", "private": true }\n' >package.json
(
  export PATH="$nocargo"
  unset CARGO CARGO_HOME RUSTUP_HOME
  npm install --omit=optional --prefer-offline --no-audit --no-fund --foreground-scripts "$bundle_tgz" 2>&1 | tee "$tmp/omit-install.log"
)
grep -q "native binary found ($prebuilt)" "$tmp/omit-install.log" || { echo "check-package: the install script did not find $prebuilt" >&2; exit 1; }
[ ! -e "node_modules/@deccom" ] || { echo "check-package: --omit=optional installed $(ls node_modules/@deccom)" >&2; exit 1; }
[ ! -e "node_modules/deccom/target" ] || { echo "check-package: node_modules/deccom/target exists" >&2; exit 1; }
loaded="$(PATH="$nocargo" node -e 'require("deccom"); console.log(Object.keys(require.cache).filter((k) => k.endsWith(".node")).join(" "))')"
[ "$loaded" = "$tmp/omit/node_modules/deccom/$prebuilt" ] || [ "$loaded" = "$(cd "$tmp/omit" && pwd -P)/node_modules/deccom/$prebuilt" ] || { echo "check-package: loaded \"$loaded\", expected node_modules/deccom/$prebuilt" >&2; exit 1; }
PATH="$nocargo" node smoke.cjs
PATH="$nocargo" node smoke.mjs
cd "$root"
echo "check-package: ok"
