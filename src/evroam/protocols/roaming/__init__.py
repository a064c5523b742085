"""The roaming contract between member utilities and the clearinghouse (seed 1.6.4).

`messages` are the shapes, `ports` what each side asks of the other, `ocpi` the OCPI 2.2.1
wire form, `http` the clients that speak it. Neither party's package is imported here.
"""
