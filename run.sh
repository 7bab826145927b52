#!/usr/bin/env bash
# Run the three stages in order: train_cam.py, infer_cam.py, eval_cam.py.
#
#   bash run.sh                                  # CPU demo on generated data (configs/synthetic.yaml)
#   bash run.sh configs/voc.yaml --gpu 0 dataset.root_dir=/data/VOC2012
#
# Everything after the config (options and key=value overrides) goes to every stage.
set -euo pipefail
cd "$(dirname "$0")"

config=configs/synthetic.yaml
if [[ $# -gt 0 && ( "$1" == *.yaml || "$1" == *.yml ) ]]; then
    config=$1
    shift
fi
args=("$@")
# The demo runs on the CPU unless a --gpu option says otherwise.
if [[ "$config" == configs/synthetic* && " ${args[*]-} " != *" --gpu"* ]]; then
    args=(--gpu cpu "${args[@]+"${args[@]}"}")
fi

for stage in train_cam.py infer_cam.py eval_cam.py; do
    echo "== python $stage --config $config ${args[*]-}"
    python "$stage" --config "$config" "${args[@]+"${args[@]}"}"
done
