"""``labkit doctor``: the preflight the day before a class (:mod:`labkit.doctor`)."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import print_json, settings

Add = Any


def cmd_doctor(args: argparse.Namespace) -> int:
    from labkit import doctor
    from labkit.aws.clients import Clients
    plan = doctor.Plan(instance_type=args.instance_type, workers=args.workers, instance_profile=args.instance_profile,
                       student=args.student)
    checks = doctor.run(Clients(settings(args)), plan)
    if args.json:
        print_json(doctor.as_dicts(checks))
    else:
        from labkit.presenters import doctor_note, doctor_table
        print(doctor_table(checks))
        print(doctor_note(checks))
    return 1 if doctor.blocked(checks) else 0


def register(add: Add) -> None:
    sp = add("doctor", cmd_doctor, "check, the day before a class, that it can run: credentials, region, each "
             "command's permissions, the instance type and the EC2 vCPU quota, the bucket name, AWS Academy, versions "
             "(one table, ok / warn / blocker with what to do; exit status 1 on a blocker; creates nothing)")
    sp.add_argument("--instance-type", default="t3.micro", metavar="TYPE", help="the workers' EC2 instance type "
                    "(default t3.micro)")
    sp.add_argument("--workers", type=int, default=1, metavar="N", help="the most instances the class will run "
                    "(an Auto Scaling group's MAX; default 1): their vCPUs are checked against the quota")
    sp.add_argument("--instance-profile", metavar="NAME", help="the existing instance profile deploy will use "
                    "(AWS Academy: LabInstanceProfile); then no role of labkit's own is needed")
    sp.add_argument("--student", action="store_true", help="check what a student needs instead (`labkit policy "
                    "student`): send jobs, own reply queues, the bucket")
    sp.add_argument("--json", action="store_true", help="print the rows as JSON")
