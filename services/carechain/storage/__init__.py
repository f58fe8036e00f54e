"""The storage service: encrypted blobs, content-addressed, in a directory or an S3 bucket.

Other packages may import only ``v1``; the rest is internal.
"""

CLIENT_MODULES: tuple[str, ...] = ()
