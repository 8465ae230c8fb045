"""Commands for the EC2 worker fleet: deploy, undeploy, policy."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import confirm, print_changes, print_json, say, settings

Add = Any


def cmd_deploy(args: argparse.Namespace) -> int:
    from labkit import fleet
    from labkit.aws.clients import Clients
    s = settings(args)
    autoscale = fleet.parse_autoscale(args.autoscale) if args.autoscale else None
    stop_at = fleet.spec.parse_stop(args.hours, args.until)
    open_ssh = fleet.is_open_cidr(args.ssh_cidr)
    if open_ssh and not args.yes and not confirm(
            f"Open SSH (port 22) to the whole internet ({args.ssh_cidr})? Type 'open' to confirm: ", "open",
            f"--ssh-cidr {args.ssh_cidr} opens SSH to the whole internet: give your own address range, use Session "
            "Manager, or add --yes to confirm that you mean it"):
        print("nothing deployed")
        return 1
    spec = fleet.FleetSpec(workers=args.workers, instance_type=args.instance_type, autoscale=autoscale,
                           ssh_cidr=args.ssh_cidr, key_name=args.key_name, instance_profile=args.instance_profile,
                           concurrency=args.concurrency, allow_open_ssh=open_ssh, wait=args.wait, stop_at=stop_at)
    spec.validate()  # a request that cannot be deployed is one line, before anything is said or made
    if s.is_local:
        say("on the emulator the resources are created but no instance boots: the local workers from `labkit up` "
            "do the work")
    else:
        say(f"deploying EC2 workers in {s.region}: instances cost money while they run (`labkit undeploy` removes "
            "them, `--hours N` makes them stop by themselves; see docs/aws.md for prices)")
    clients = Clients(s)
    report = fleet.deploy(clients, spec, progress=say)
    print_changes(created=report.created, updated=report.updated, deleted=report.deleted, note=report.notes)
    print(fleet.format_status(fleet.fleet_status(clients)))
    if args.wait and report.unhealthy:
        say(f"{len(report.unhealthy)} instance(s) did not become healthy: {', '.join(report.unhealthy)}")
        return 1
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    from labkit import fleet
    from labkit.aws.clients import Clients
    clients = Clients(settings(args))
    report = fleet.undeploy(clients, progress=say)
    print_changes(deleted=report.deleted, note=report.notes)
    print(f"the worker fleet for bucket {clients.bucket_name()} is gone")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from labkit.aws.clients import Clients
    from labkit.fleet import deployer, policy, student
    s = settings(args)
    clients = Clients(s)
    bucket, account = clients.bucket_name(), clients.account_id()
    if args.who == "worker":
        print_json(policy.worker_policy(s, bucket, account))
    elif args.who == "student":
        print_json(student.student_policy(s, bucket, account))
    else:
        print_json(deployer.deployer_policy(s, bucket, account, commands=args.command or deployer.COMMANDS))
    return 0


def register(add: Add, common: argparse.ArgumentParser) -> None:
    sp = add("deploy", cmd_deploy, "run workers on EC2: a least-privilege instance role, a security group with no "
             "inbound rule, N instances or an Auto Scaling group sized by the queues' backlog")
    sp.add_argument("--workers", type=int, default=1, metavar="N", help="instances to run (default 1)")
    sp.add_argument("--instance-type", default="t3.micro", metavar="TYPE", help="EC2 instance type (default "
                    "t3.micro; Graviton types like t4g.micro get the arm64 image)")
    sp.add_argument("--autoscale", metavar="MIN:MAX", help="an Auto Scaling group instead of --workers: MIN "
                    "instances when idle (0 is fine), up to MAX while requests wait")
    sp.add_argument("--hours", type=float, metavar="N", help="cost guard: the fleet scales itself to zero N hours "
                    "from now (a scheduled action of its Auto Scaling group, run by AWS with your laptop closed; "
                    "with --workers the instances become a group of that fixed size)")
    sp.add_argument("--until", metavar="HH:MM", help="cost guard, like --hours: the fleet scales itself to zero at "
                    "this time of day, in this machine's time zone (tomorrow if it has passed today)")
    sp.add_argument("--ssh-cidr", metavar="CIDR", help="open SSH from this range only (e.g. 203.0.113.7/32); "
                    "default: no inbound rule at all, reach instances with Session Manager")
    sp.add_argument("--key-name", metavar="NAME", help="EC2 key pair for SSH (needed with --ssh-cidr)")
    sp.add_argument("--instance-profile", metavar="NAME", help="use this existing instance profile instead of "
                    "creating a role (for accounts that may not create IAM roles)")
    sp.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once per instance (default 4)")
    sp.add_argument("--yes", action="store_true", help="confirm opening SSH to the whole internet without asking")
    sp.add_argument("--wait", type=float, nargs="?", const=900.0, default=0.0, metavar="SECONDS",
                    help="wait until every instance's worker reports healthy (default 900 s when given without a "
                    "value); exit status 1 naming those that did not")

    add("undeploy", cmd_undeploy, "terminate the EC2 workers and delete everything `deploy` made (role, profile, "
        "security group, launch template, group, alarms, wheels)")

    sp = add("policy", lambda a: (a.policy_parser.print_help(), 2)[1], "print an IAM policy for these queues "
             "and bucket: the worker instances' role (worker), what you need to run up, deploy, undeploy and "
             "teardown (deployer), or what a student of a class on your account needs to send jobs (student)")
    sp.set_defaults(policy_parser=sp)
    psub = sp.add_subparsers(dest="who", metavar="WHO")
    pw = psub.add_parser("worker", parents=[common], help="the EC2 worker instances' role (least privilege: "
                         "these queues and this bucket)",
                         description="Print the IAM policy of the EC2 worker instances' role, for these queues "
                         "and bucket (what `labkit deploy` attaches to the role it creates).")
    pw.set_defaults(fn=cmd_policy)
    pd = psub.add_parser("deployer", parents=[common], help="what your own credentials need to run up, deploy, "
                         "undeploy and teardown", description="Print the IAM policy your own credentials need to "
                         "run `labkit up`, `deploy`, `undeploy` and `teardown` for these queues and bucket.")
    pd.set_defaults(fn=cmd_policy)
    pd.add_argument("--command", action="append", metavar="CMD",
                    help="only what this command needs (up, deploy, undeploy or teardown; repeatable; default: all "
                    "four)")
    pst = psub.add_parser("student", parents=[common], help="what a student needs on a shared account: send jobs, "
                          "its own reply queues, its uploads, results by key; no purge or delete of the shared "
                          "queues, bucket or fleet", description="Print the IAM policy for the students of a class "
                          "on your account (attach it to their IAM group): send jobs to these queues, make, use and "
                          "delete their own reply queues (labkit-reply-*), put uploads and claim checks, "
                          "read results by key. See docs/aws.md, 'Running a class'.")
    pst.set_defaults(fn=cmd_policy)
