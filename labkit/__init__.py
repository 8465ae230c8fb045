"""labkit: send number and image jobs through SQS and S3 to workers, on AWS or an embedded emulator."""

from labkit.client import ImageResult, Job, Lab
from labkit.config import Settings
from labkit.errors import JobTimeout, LabkitError, RemoteJobError

__version__ = "0.1.0"
__all__ = ["Lab", "Job", "ImageResult", "Settings", "LabkitError", "RemoteJobError", "JobTimeout", "__version__"]
