"""What requests and resources cost at list prices (labkit/costs.py), and what the presenters show of it."""

from __future__ import annotations

import pytest

from labkit import costs
from labkit.presenters import billing_table, calls_table


def test_requests_are_priced_by_their_billing_class():
    calls = {"sqs.SendMessageBatch": 1_000_000, "s3.PutObject": 1000, "s3.GetObject": 1000,
             "s3.DeleteObject": 1000, "sts.GetCallerIdentity": 5, "ec2.RunInstances": 1}
    c = costs.cost(calls)
    assert c["sqs_usd"] == pytest.approx(0.40)
    assert c["s3_usd"] == pytest.approx(0.005 + 0.0004)  # PUT class, GET class; DELETE is free
    assert c["total_usd"] == pytest.approx(0.4054)
    assert costs.price({"sqs.ReceiveMessage": 2}, jobs=1, per=1_000_000)["total_usd"] == pytest.approx(0.80)
    rows = costs.rows(calls)
    assert rows[0] == ["sqs.SendMessageBatch", 1_000_000, "$0.400000"]
    assert ["sts.GetCallerIdentity", 5, "no charge per request"] in rows


def test_the_calls_table_totals_and_dates_its_prices():
    text = str(calls_table({"sqs.SendMessage": 3, "s3.PutObject": 2}, "AWS requests this notebook made"))
    assert f"at list prices of {costs.PRICES['as_of']}" in text
    assert "total" in text and "$0.000011" in text  # 3 x 0.40/1e6 + 2 x 0.005/1e3


def test_what_is_billing_now():
    instances = [{"type": "t3.micro", "state": "running"}, {"type": "t3.micro", "state": "running"},
                 {"type": "t3.micro", "state": "terminated"}, {"type": "m9.huge", "state": "running"}]
    status = {"fleet": {"instances": instances, "alarms": [{"name": "a"}, {"name": "b"}]},
              "bucket": {"name": "b", "objects": 10, "bytes": 2 * 10**9},
              "queues": {"q": {"visible": 0}, "r": {"error": "missing"}}, "reply_queues": 2}
    rows = dict(costs.billing_now(status))
    assert rows["2 EC2 instance(s) t3.micro running"] == "$15.18/month ($0.0104/hour each)"
    assert rows["1 EC2 instance(s) m9.huge running"] == "see the EC2 price list"
    assert rows["2 CloudWatch alarm(s)"] == "$0.20/month"
    assert rows["bucket b: 10 objects, 1,907.3 MiB"] == "$0.0460/month (storage)"
    assert "1 queue(s) (+2 reply queues)" in rows
    assert "What costs money while it exists" in str(billing_table(status))
    assert "What the same would cost on AWS" in str(billing_table({}, local=True))
