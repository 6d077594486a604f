"""Files: image stacks (frame folders, TIFF, zarr), label images and stacks (reading, writing
frame by frame), Cell Tracking Challenge export. No torch."""
