"""multi2cap.train"""
