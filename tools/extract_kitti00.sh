#!/usr/bin/env bash
# Write KITTI odometry 00, frames 0-1699 (left grey camera, calib, times, GT), out of a clone of
# github.com/audrow/navarch-568-proj, into a folder OUTSIDE this repository (see DEVELOPERS.md).
#   tools/extract_kitti00.sh GIT_DIR OUT_DIR [N_FRAMES]
# GIT_DIR: the clone's git directory (a bare clone or CLONE/.git); OUT_DIR: e.g. ~/data/kitti00.
set -euo pipefail
GIT_DIR=${1:?usage: tools/extract_kitti00.sh GIT_DIR OUT_DIR [N_FRAMES]}
OUT=${2:?usage: tools/extract_kitti00.sh GIT_DIR OUT_DIR [N_FRAMES]}
N=${3:-1700}
COMMIT=59ea41de0c6f4d12dc49335b97cc3bac7dff3571
SEQ=dataset/sequences/00
g() { git --git-dir="$GIT_DIR" show "$COMMIT:$1"; }
mkdir -p "$OUT/image_0"
g "$SEQ/calib.txt" > "$OUT/calib.txt"
g "$SEQ/times.txt" | sed -n "1,${N}p" > "$OUT/times.txt"
g dataset/poses/00.txt | sed -n "1,${N}p" > "$OUT/poses.txt"
for ((i = 0; i < N; i++)); do
  f=$(printf "%06d.png" "$i")
  [ -s "$OUT/image_0/$f" ] || g "$SEQ/image_0/$f" > "$OUT/image_0/$f"
  if (( i % 100 == 0 )); then echo "frame $i / $N" >&2; fi
done
echo "wrote $OUT: $N frames, calib.txt, times.txt, poses.txt" >&2
