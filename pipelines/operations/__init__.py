"""What the commands do around a run: one unattended retraining (retrain.py), the
retraining loop (schedule.py), the deployment of a pushed version (post_push.py) and the
pipeline root's retention (retention.py).
"""
