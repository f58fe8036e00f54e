"""The storage service: encrypted blobs, content-addressed, in a directory or an S3 bucket.

Modules: ``blob_client`` (``BlobClient``: small blobs batched across concurrent callers, for the records gateway),
``blobstore`` (the :class:`BlobStore` seam, ``BlobRef``, ``check_sha256``, ``verified_chunks``),
``file_blobstore`` (``LocalBlobStore``, embedded), ``s3_blobstore`` (``S3BlobStore``), ``server`` (the gRPC
StorageService, records only).

Other packages may import only ``v1`` and the modules in CLIENT_MODULES; the rest is internal.
"""

CLIENT_MODULES: tuple[str, ...] = ("blob_client",)
