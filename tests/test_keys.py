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


def test_a_taken_key_moves_to_the_next_free_one_of_its_stripe():
    tree = BTrees.OOBTree.OOBTree()
    key = keys.make(5, keys.new_tiebreak(3))
    assert keys.insert_unique(tree, key, 'a') == key
    assert keys.insert_unique(tree, key, 'b') == key + keys.STRIPES
    assert keys.insert_unique(tree, key, 'c') == key + 2 * keys.STRIPES
    assert list(tree.values()) == ['a', 'b', 'c']
    assert {keys.stripe_of(k) for k in tree} == {3}


def test_tiebreaks_of_one_process_differ():
    assert len({keys.new_tiebreak() for _ in range(1000)}) == 1000


def test_the_stripe_is_in_the_key_and_keeps_the_order():
    stripes = [keys.STRIPES - 1, 0, 5, 2]
    made = [keys.make(7, keys.new_tiebreak(stripe)) for stripe in stripes]
    assert [keys.stripe_of(key) for key in made] == stripes
    assert made == sorted(made)  # in the order made, whatever the stripe
    assert {keys.micros_of(key) for key in made} == {7}


def test_threads_of_a_process_get_different_stripes():
    import threading
    seen = []

    def record():
        seen.append((keys.local_stripe(), keys.local_stripe()))
    threads = [threading.Thread(target=record)
               for _ in range(keys.STRIPES)]
    for thread in threads:
        thread.start()
        thread.join()
    assert all(first == again for first, again in seen)
    assert sorted(first for first, _ in seen) == list(range(keys.STRIPES))


def test_a_forked_child_draws_its_own_keys_and_stripes():
    """Children of one preforking parent must not all put in the same
    stripes: without a fresh seed a child would continue the parent's
    counters exactly."""
    import os
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b'%d' % keys.new_tiebreak())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    child_tiebreak = int(os.read(read, 100))
    os.close(read)
    assert child_tiebreak != keys.new_tiebreak()
