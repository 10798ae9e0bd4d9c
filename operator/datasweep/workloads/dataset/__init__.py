"""The dataset stage: a prepared dataset (trained on as it is) snapshotted into the shared layout."""
