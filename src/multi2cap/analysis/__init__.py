"""multi2cap.analysis"""
