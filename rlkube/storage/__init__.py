"""Run directories in buckets (gs://, s3://), through fsspec; never TensorFlow's gfile. Import the module you use:

* `filesystems`: bucket URLs, the filesystem for one, rlkube's local cache and a bucket run's local mirror;
* `errors`: storage trouble the user can fix, as one UserError line, and the quick GCS preflight;
* `sync`: sync_up, sync_down and pull_latest_checkpoint, with the rules every writer and reader keeps.
"""
