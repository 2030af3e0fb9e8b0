"""The controller's side: keys on disk, the home directory, and driving a controller role."""
