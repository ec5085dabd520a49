"""Shared fixtures: real ZODB databases with the queues installed."""
import os

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

import pyramid_zcasync
from pyramid_zcasync.interfaces import IQueue


@pytest.fixture
def mapping_db():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture
def file_db(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture(params=['mapping', 'file'])
def db(request, tmp_path):
    """Each test using it runs on MappingStorage and on FileStorage."""
    if request.param == 'mapping':
        storage = ZODB.MappingStorage.MappingStorage()
    else:
        storage = ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs'))
    database = ZODB.DB(storage)
    pyramid_zcasync.install_queues(database)
    yield database
    transaction.abort()
    database.close()


@pytest.fixture
def conn(db):
    connection = db.open()
    yield connection
    transaction.abort()
    connection.close()


@pytest.fixture
def queue(conn):
    return IQueue(conn.root())
