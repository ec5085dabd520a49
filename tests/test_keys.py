"""Integer job keys: ordered by time, unique even within a microsecond."""
import BTrees.OOBTree

from pyramid_zcasync import keys


def test_keys_order_by_time_then_tiebreak():
    early = keys.make(1000, 2 ** 32 - 1)
    late = keys.make(1001, 0)
    assert keys.FLOOR < early < late
    assert keys.micros_of(late) == 1001 and keys.tiebreak_of(early) == \
        2 ** 32 - 1
    assert keys.first_of(1001) <= late <= keys.last_of(1001)
    assert keys.last_of(1000) < keys.first_of(1001)


def test_a_taken_key_moves_to_the_next_free_one():
    tree = BTrees.OOBTree.OOBTree()
    key = keys.make(5, 7)
    assert keys.insert_unique(tree, key, 'a') == key
    assert keys.insert_unique(tree, key, 'b') == key + 1
    assert keys.insert_unique(tree, key, 'c') == key + 2
    assert list(tree.values()) == ['a', 'b', 'c']


def test_tiebreaks_of_one_process_differ():
    assert len({keys.new_tiebreak() for _ in range(1000)}) == 1000
