#!/bin/bash
# Would the demo be faster with its independent stages side by side? Re-runs the five training
# stages of a finished study (their saved configs) as two one-thread lanes:
#   lane A: translate cyclegan -> apply -> segment cyclegan;   lane B: segment source_only -> oracle
# and prints when each stage ended (seconds from the start). Compare with the study's stages.json.
#   bash benchmarks/lanes.sh runs/demo data/synthetic /tmp/lanes
set -euo pipefail
F=$(realpath "$1"); DATA=$(realpath "$2"); L=${3:-/tmp/lanes}
I=${I2IUDA:-i2iuda}
rm -rf "$L"; mkdir -p "$L"
export OMP_NUM_THREADS=1
start=$(date +%s.%N)
mark() { echo "$1 $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$L/times"; }
(
  $I translate train --config "$F/translate/cyclegan/config.yaml" --out "$L/translate" > "$L/a1.log" 2>&1; mark "A translate"
  $I translate apply --run "$L/translate" --source "synthetic:$DATA:source" --out "$L/translated" --size 64x128 \
      --workers 0 > "$L/a2.log" 2>&1; mark "A apply"
  $I segment train --config "$F/segment/cyclegan/config.yaml" --out "$L/seg_cyclegan" \
      --train "gta5:$L/translated:train" --val "gta5:$L/translated:val" > "$L/a3.log" 2>&1; mark "A segment cyclegan"
) &
(
  $I segment train --config "$F/segment/source_only/config.yaml" --out "$L/seg_source_only" > "$L/b1.log" 2>&1; mark "B segment source_only"
  $I segment train --config "$F/segment/oracle/config.yaml" --out "$L/seg_oracle" > "$L/b2.log" 2>&1; mark "B segment oracle"
) &
wait
mark "all"
