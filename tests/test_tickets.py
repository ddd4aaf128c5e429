"""One-time tickets (gateway/tickets.py), shared by documents and forms."""

from __future__ import annotations

from gateway.tickets import TicketBook


def test_a_ticket_works_once_for_its_item_until_it_expires() -> None:
    book = TicketBook(60)
    ticket = book.mint("c1", "doc", now=0.0)
    assert len(ticket) == 32
    assert book.redeem(ticket, "c1", "doc", now=1.0, consume=False)  # a look (HEAD)
    assert book.redeem(ticket, "c1", "doc", now=1.0)
    assert not book.redeem(ticket, "c1", "doc", now=1.0)  # used up
    late = book.mint("c1", "doc", now=0.0)
    assert not book.redeem(late, "c1", "doc", now=60.0)
    guessed = book.mint("c1", "doc", now=0.0)
    assert not book.redeem(guessed, "c1", "other", now=1.0)
    assert not book.redeem(guessed, "c1", "doc", now=1.0)  # a wrong guess spends it
    assert not book.redeem("x" * 65, "c1", "doc", now=1.0)


def test_bounds_per_consultation_overall_and_the_end() -> None:
    book = TicketBook(60, per_consultation=2, max_tickets=5)
    other = book.mint("c2", "d", now=0.0)
    first, *_, last = [book.mint("c1", "d", now=0.0) for _ in range(4)]
    assert book.holds("c1") == 2 and book.holds("c2") == 1
    assert not book.redeem(first, "c1", "d", now=1.0)  # pushed out by its own
    assert book.redeem(last, "c1", "d", now=1.0)
    for n in range(6):
        book.mint(f"c{n + 10}", "d", now=0.0)
    assert book.holds("c2") == 0 and not book.redeem(other, "c2", "d", now=1.0)  # overall
    book.mint("c3", "d", now=0.0)
    book.forget("c3")
    assert book.holds("c3") == 0
    # expired tickets leave at the next mint
    book.mint("c4", "d", now=100.0)
    assert sum(book.holds(f"c{n + 10}") for n in range(6)) == 0
