#!/usr/bin/env bash
# Lint the GitHub Actions workflows with actionlint.
#
# Uses `actionlint` from PATH if present; otherwise builds a pinned version from
# source through the Go module proxy into <repo>/.tmp/bin (no GitHub downloads).
# actionlint also runs shellcheck on `run:` scripts when shellcheck is on PATH
# (optional). Extra arguments are passed through to actionlint.
set -euo pipefail

ACTIONLINT_VERSION="v1.7.12"

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "${script_dir}/.." && pwd)"
cd "${repo_root}"

if command -v actionlint >/dev/null 2>&1; then
  actionlint_bin="$(command -v actionlint)"
else
  bin_dir="${repo_root}/.tmp/bin"
  actionlint_bin="${bin_dir}/actionlint"
  if [[ ! -x "${actionlint_bin}" ]] \
    || ! "${actionlint_bin}" -version 2>/dev/null | head -n 1 | grep -qxF "${ACTIONLINT_VERSION}"; then
    if ! command -v go >/dev/null 2>&1; then
      echo "actionlint.sh: neither actionlint nor go is on PATH" >&2
      exit 2
    fi
    echo "actionlint.sh: installing actionlint ${ACTIONLINT_VERSION} into ${bin_dir}" >&2
    mkdir -p "${bin_dir}"
    GOBIN="${bin_dir}" \
      go install "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}" </dev/null
  fi
fi

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if [[ ${#workflows[@]} -eq 0 ]]; then
  echo "actionlint.sh: no workflow files under .github/workflows" >&2
  exit 2
fi

echo "actionlint.sh: $("${actionlint_bin}" -version | head -n 1) on ${workflows[*]}" >&2
exec "${actionlint_bin}" -no-color "$@" "${workflows[@]}" </dev/null
