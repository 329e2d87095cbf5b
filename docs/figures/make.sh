#!/usr/bin/env bash
# Regenerates the README's figures (needs the results extra: pip install ".[results]").
#   bash docs/figures/make.sh          # a few minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/figures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 12 months of testosterone enanthate, then 24 months off: labs and recovery
pulsehpg run examples/trt-recovery.toml -n 100 -o "$work/trt.h5" >/dev/null
pulsehpg plot "$work/trt.h5" --kind labs -o "$out/labs.png"
pulsehpg plot "$work/trt.h5" --kind recovery -o "$out/recovery.png"

# pulsatile then continuous gonadorelin in CHH, three men, traces every 10 min;
# one day in the pulsatile phase shows each bolus, the whole run the Belchetz switch
pulsehpg run examples/gonadorelin-chh.toml -n 3 --traces "10 min" -o "$work/chh.h5" >/dev/null
pulsehpg plot "$work/chh.h5" --kind traces --start "12 weeks" --span "1 day" -o "$out/traces.png"

# the restart sweep at 5 men per point and replicate: recovery against clomiphene dose
pulsehpg sweep examples/sweep-restart.toml -o "$work/restart.h5" --patients 5 -q >/dev/null
pulsehpg plot "$work/restart.h5" --kind sweep -o "$out/sweep.png"
# and as a surface over clomiphene dose and TRT duration (pump intervals pooled)
pulsehpg plot "$work/restart.h5" --kind sweep --x phase.serm.drug.clomiphene.dose \
    --by phase.trt.duration -o "$out/surface.png"
