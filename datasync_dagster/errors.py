"""The exceptions of datasync-dagster: one base class, one subclass per condition."""


class DataSyncError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DataSyncError):
    """The configuration file is missing, malformed or inconsistent."""


class InvalidIdentifier(DataSyncError):
    """A table or column name from the configuration is not a safe SQL identifier."""


class SourceError(DataSyncError):
    """Reading from a source system failed."""


class DecodeError(DataSyncError):
    """A source value does not follow the encoding its decoding rule expects."""


class SchemaMismatch(DataSyncError):
    """The cache table's columns do not match what the source delivers."""


class DuplicateKeys(DataSyncError):
    """The rows read from the source repeat a key of the cache table."""


class SyncInProgress(DataSyncError):
    """Another sync of the same table holds its lock."""


class SyncInterrupted(DataSyncError):
    """The sync was stopped from outside (run terminated, signal received)."""


class CacheTableDrift(SchemaMismatch):
    """The existing cache table no longer fits the columns or the key that the sync produces."""


class CacheRefusedValue(DataSyncError):
    """The cache database refused a value: it does not fit its column."""
