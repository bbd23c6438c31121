#!/bin/bash
# The official tensorflow/serving image's entrypoint: the launcher relies on this
# contract (ports 8500/8501, MODEL_NAME under MODEL_BASE_PATH, extra args appended).
# One deliberate difference: `exec`, so SIGTERM (docker stop) reaches the server, which
# drains and exits at once instead of being killed after the stop timeout.
exec tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
