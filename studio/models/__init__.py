"""Model sources and loading: device policy, the loaded-model cache, safe file loaders."""
