#!/usr/bin/env bash
# The sweeps behind results/: two per zoo model. Each is resumable: rerunning a line continues where a
# killed run stopped (hwsim sweep skips the points already in DIR/points.csv), and `hwsim report DIR`
# re-renders the plots and summary. LIMIT: test images per point (10000 = the full test set).
#
#   results/run_sweeps.sh cifar_cnn 2000 250              # model, images for the formats / accumulator sweeps
#   OUT=sweeps results/run_sweeps.sh cifar_cnn 10000 10000   # the full test set, elsewhere
#   STEPS=formats results/run_sweeps.sh mobilenet            # one of the two sweeps only
set -euo pipefail
MODEL=${1:-cifar_cnn}
LIMIT_FORMATS=${2:-10000}
LIMIT_ACCUM=${3:-10000}
WORKERS=${WORKERS:-2}
OUT=${OUT:-results}   # a directory refuses a sweep with other settings: use another OUT for other limits
# The hardware: the default array (32x32 fixed PEs, LPDDR4X bandwidth), each configuration on an array of
# the float32 array's area (--iso-area). Costs are derived from the recorded points, so rerunning a line
# with other hardware flags re-costs a finished sweep without evaluating anything again.
HW=${HW:---iso-area}
STEPS=${STEPS:-formats accumulators}

# 1. formats: how low can the operands go? Every format with a wide accumulator, round to nearest.
if [[ " $STEPS " == *" formats "* ]]; then
hwsim sweep --model "$MODEL" --workers "$WORKERS" --limit "$LIMIT_FORMATS" --out "$OUT/$MODEL/formats" $HW \
  --formats fp32,bf16,fp16,fp8_e4m3,fp8_e5m2,fp6_e2m3,fp6_e3m2,fp4_e2m1,int8,int6,int4,int2,mxfp8_e4m3,mxfp6_e2m3,mxfp4_e2m1,mxint8 \
  --accum fp32,int32 --rounding nearest
fi

# 2. accumulators: narrow accumulators, round to nearest vs stochastic rounding of every product and sum
#    (Gupta et al. 2015), fp8 e4m3 operands (unscaled: the accumulator sees the network's own magnitudes;
#    fixed16.F has F fractional bits and range +-2^(15-F)).
if [[ " $STEPS " == *" accumulators "* ]]; then
hwsim sweep --model "$MODEL" --workers "$WORKERS" --limit "$LIMIT_ACCUM" --out "$OUT/$MODEL/accumulators" $HW \
  --formats fp8_e4m3 --accum fp32,fp16,bf16,fixed16.6,fixed16.5,fixed16.4 \
  --rounding nearest,stochastic --seeds 2
fi
