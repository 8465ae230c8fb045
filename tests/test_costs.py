"""What requests and resources cost at list prices (labkit/costs.py), and what the presenters show of it."""

from __future__ import annotations

import re

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


def test_every_price_is_one_row_of_one_table_with_its_date_and_aws_page():
    for key, p in costs.TABLE.items():
        assert p.usd > 0 and p.unit, key
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.date), key
        assert p.source.startswith("https://aws.amazon.com/") and "/pricing/" in p.source, key
    assert costs.TABLE["public_ipv4"].usd == 0.005 and costs.TABLE["public_ipv4"].date == "2024-02-01"
    assert costs.TABLE["alarm_metric"].usd == 0.10 and costs.TABLE["ebs_gp3"].usd == 0.08
    # The benchmark's shape of the same prices is derived from the table, not a second copy
    assert costs.PRICES["sqs_per_million_requests"] == pytest.approx(0.40)
    assert costs.PRICES["ec2_per_hour"]["t3.micro"] == costs.TABLE["ec2.t3.micro"].usd
    assert max(p.date for p in costs.TABLE.values()) == costs.AS_OF


def test_sqs_bills_each_64_kib_chunk_of_a_payload_as_a_request():
    assert costs.sqs_requests(0) == 1 and costs.sqs_requests(64 * 1024) == 1
    assert costs.sqs_requests(64 * 1024 + 1) == 2
    assert costs.sqs_requests(200 * 1024) == 4  # a 200 KiB message: 4 requests
    assert costs.sqs_requests(256 * 1024) == 4
    # Priced as 4 where its send was billed as 4 (calls stay calls; the billed requests price them)
    c = costs.cost({"sqs.SendMessage": 1}, billed={"sqs.SendMessage": 4})
    assert c["sqs_usd"] == pytest.approx(4 * 0.40 / 1e6)
    assert costs.rows({"sqs.SendMessage": 1}, {"sqs.SendMessage": 4})[0] == [
        "sqs.SendMessage", 1, "$0.000002 (billed as 4: 64 KiB chunks)"]


def test_a_fleet_of_two_t3_micro_costs_its_instances_public_ipv4_root_volumes_alarms_and_polling():
    # Given two running t3.micro workers of an Auto Scaling group with labkit's two alarms (2 and 4 metrics)
    instances = [{"type": "t3.micro", "state": "running", "public_ip": True}] * 2 + [
        {"type": "t3.micro", "state": "terminated"}]
    fleet = {"instances": instances, "alarms": [{"name": "backlog", "metrics": 2}, {"name": "idle", "metrics": 4}]}
    # When its cost per hour is asked
    hourly = costs.fleet_hourly(fleet)
    rows = {what: usd for what, usd, _ in hourly["rows"]}
    # Then it counts each line (before: instances and "2 alarms" only, no IPv4, no EBS, no polling)
    assert rows["2 EC2 instance(s) t3.micro"] == pytest.approx(2 * 0.0104)
    assert rows["2 public IPv4 address(es)"] == pytest.approx(2 * 0.005)
    assert rows["2 root volume(s), EBS gp3 8 GiB each"] == pytest.approx(2 * 8 * 0.08 / 730)
    assert rows["2 CloudWatch alarm(s) reading 6 metric(s)"] == pytest.approx(6 * 0.10 / 730)
    # The workers on EC2 poll two queues every 20 s (their unit's --poll-wait) and write a heartbeat a minute
    polling = rows["the 2 instance worker(s): polling and heartbeats while idle"]
    assert polling == pytest.approx(2 * (2 * 180 * 0.40 / 1e6 + 60 * 0.005 / 1e3))
    assert costs.ec2_poll_wait() == 20
    assert hourly["total_usd"] == pytest.approx(sum(rows.values()))
    # And local workers on AWS poll too, at their own default wait
    local = {w: usd for w, usd, _ in costs.fleet_hourly(None, local_workers=1)["rows"]}
    assert local == {"1 local worker(s) on AWS: polling and heartbeats while idle": pytest.approx(2 * 360 * 0.4e-6)}


def test_what_is_billing_now():
    instances = [{"type": "t3.micro", "state": "running"}, {"type": "t3.micro", "state": "running"},
                 {"type": "t3.micro", "state": "terminated"}, {"type": "m9.huge", "state": "running"}]
    status = {"fleet": {"instances": instances, "alarms": [{"name": "a"}, {"name": "b"}]},
              "bucket": {"name": "b", "objects": 10, "bytes": 2 * 10**9},
              "queues": {"q": {"visible": 0}, "r": {"error": "missing"}}, "reply_queues": 2}
    rows = dict(costs.billing_now(status))
    assert rows["2 EC2 instance(s) t3.micro"] == "$0.0208/hour ($15.18/month; $0.0104/hour each)"
    assert rows["1 EC2 instance(s) m9.huge"] == "see the EC2 price list"
    assert rows["3 public IPv4 address(es)"] == "$0.0150/hour ($10.95/month; $0.005/hour each)"
    assert rows["2 CloudWatch alarm(s) reading 2 metric(s)"] == "$0.0003/hour ($0.20/month; $0.10/alarm metric-month)"
    assert rows["total while it runs"].startswith("$0.0")  # the m9.huge's own price unknown: not in the total
    assert rows["bucket b: 10 objects, 1,907.3 MiB"] == "$0.0460/month (storage)"
    assert "1 queue(s) (+2 reply queues)" in rows
    assert "What costs money while it exists" in str(billing_table(status))
    assert "What the same would cost on AWS" in str(billing_table({}, local=True))
