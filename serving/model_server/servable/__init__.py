"""One loaded version and running an API on it (TF Serving's servables/tensorflow)."""
